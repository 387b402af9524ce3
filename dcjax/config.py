"""Default configuration and the presets the files in `configs/` are made of.

A config file is `get_config(arg)` returning an `ml_collections.ConfigDict`;
`arg` (after the colon on the command line, `--config configs/dec_usps.py:smoke`)
selects presets, e.g. `smoke` for a seconds-long run.
"""
import ml_collections

# Dataset names the config files exist for, and how their inputs are normalised.
DATASETS = ("digits", "usps", "optdigits", "pendigits", "mnist", "fmnist")
ALGORITHMS = ("ae_kmeans", "dec", "idec", "dcn", "dkm")


def get_default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.algorithm = "dec"
    c.seed = 0            # the first seed of the launch
    c.seeds = 1           # seeds seed, seed+1, ... trained together in one launch
    c.batch_size = 256
    # 'vmap': one batched program (fast on GPU); 'loop': lax.map over seeds,
    # bit-identical per seed whatever the number of seeds, and 10-30% faster
    # than vmap on CPU; 'auto': loop on a single CPU device, vmap otherwise
    # (see dcjax/train.py).
    c.seed_parallelism = "auto"

    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", normalize="auto", n_clusters=0,
        subsample=0, subsample_seed=0,
        # only for 'blobs'
        n_samples=1000, n_features=10, blob_clusters=5, cluster_std=1.0, blob_seed=0))

    c.model = ml_collections.ConfigDict(dict(
        hidden_dims=(500, 500, 2000), embedding_dim=10,
        activation="relu",   # 'relu' as the papers; 'leaky_relu' as ClustPy
        weight_init="torch"))  # 'torch' (ClustPy's PyTorch defaults) or 'lecun' (flax)

    c.pretrain = ml_collections.ConfigDict(dict(epochs=100, learning_rate=1e-3))
    c.clustering = ml_collections.ConfigDict(dict(epochs=150, learning_rate=1e-4))
    c.kmeans = ml_collections.ConfigDict(dict(n_init=10))
    # Start from another run's pretrained autoencoder (its workdir), so that all
    # algorithms of a study share one pretraining per seed.
    c.pretrained_from = ""

    c.dec = ml_collections.ConfigDict(dict(alpha=1.0, target="batch"))  # IDEC uses it too
    c.idec = ml_collections.ConfigDict(dict(gamma=0.1))
    c.dcn = ml_collections.ConfigDict(dict(lambda_rec=1.0, lambda_clust=0.05, init_count=100.0))
    c.dkm = ml_collections.ConfigDict(dict(
        lambda_rec=1.0, lambda_clust=1.0, alpha=1000.0,
        alpha_schedule="fixed", distance="squared"))

    c.checkpoint = ml_collections.ConfigDict(dict(
        # Retention of the per-epoch model state (params, centers; orbax's own
        # options). 0 = keep all. Per-epoch snapshots (embedding, assignments,
        # centers) and records are always kept: epoch selection needs them.
        max_to_keep=0, keep_period=0,
        # The full state, optimiser included, for resuming a killed run: every
        # resume_every epochs and at the last (epochs after it are replayed).
        resume_every=10,
        embedding_dtype="float32",  # 'float16' halves the snapshot size
        compress=False))  # zstd: ~25% smaller states, ~0.1 s more CPU per USPS save
    c.eval_chunk = 2048   # rows per chunk when embedding the whole data set
    c.progress = True
    # Write <workdir>/report.html (dcjax.report) when training ends.
    c.report = False
    return c


def apply_presets(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Comma-separated presets: 'smoke' (tiny, seconds), 'seeds=N'."""
    for item in filter(None, (arg or "").split(",")):
        if item == "smoke":
            c.pretrain.epochs, c.clustering.epochs = 3, 3
            c.model.hidden_dims = (64, 64, 128)
        elif item.startswith("seeds="):
            c.seeds = int(item.split("=", 1)[1])
        else:
            raise ValueError(f"unknown config preset {item!r}; known: smoke, seeds=N")
    return c


def make_config(algorithm: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    c = get_default_config()
    c.algorithm = algorithm
    c.dataset.name = dataset
    c = apply_presets(c, arg)
    if algorithm == "ae_kmeans":
        c.clustering.epochs = 0
    return c
