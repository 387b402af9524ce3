"""Default configuration, the presets, the named configs, and the checks.

A config file is `get_config(arg)` returning an `ml_collections.ConfigDict`;
`arg` (after the colon on the command line, `--config configs/dec_usps.py:smoke`)
selects presets, e.g. `smoke` for a seconds-long run.

The files in the repository's `configs/` are one line each,
`make_config(algorithm, dataset, arg)`, so a config can also be named:
`--config dkm_usps`, `--config dkm` (the algorithm on digits, for your own
data via `--config.dataset.name=data.csv`) or `--config default`
(`config_from_name`). Names work from any folder after `pip install`.

`validate(config)` refuses, before any compute, values no run can use;
`ConfigError` says which field and what to do.
"""
import math

import ml_collections


class ConfigError(ValueError):
    """A setting a person must change. `field` names it (dotted), when there
    is one; command lines print the message as one line and exit with status 2."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

# Dataset names the config files exist for, and how their inputs are normalised.
DATASETS = ("digits", "usps", "optdigits", "pendigits", "mnist", "fmnist")
ALGORITHMS = ("ae_kmeans", "dec", "idec", "dcn", "dkm", "deccs")
# UNSEEN around an algorithm: make_config("unseen_dcn", ...) is DCN with `unseen.enabled`.
UNSEEN_PREFIX = "unseen_"
UNSEEN_BASES = ("dcn", "dec", "dkm")   # the paper's base algorithms
# What a config name may start with: every algorithm, and UNSEEN around each base.
NAMED_ALGORITHMS = (*ALGORITHMS, *(UNSEEN_PREFIX + a for a in UNSEEN_BASES))


def get_default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.algorithm = "dec"
    c.seed = 0            # the first seed of the launch
    c.seeds = 1           # seeds seed, seed+1, ... trained together in one launch
    c.batch_size = 256
    # The last, smaller batch of an epoch when batch_size does not divide N:
    # 'drop' it (every step one shape) or 'keep' it as one more step of its
    # own size (as a PyTorch DataLoader with drop_last=False, ClustPy's
    # default). Either way the epoch's order is the same permutation.
    c.last_batch = "drop"
    # 'vmap': one batched program (fast on GPU); 'loop': lax.map over seeds,
    # bit-identical per seed whatever the number of seeds, and 10-30% faster
    # than vmap on CPU; 'auto': loop on a single CPU device, vmap otherwise
    # (see dcjax/train.py).
    c.seed_parallelism = "auto"

    c.dataset = ml_collections.ConfigDict(dict(
        # name: a data set (DATASETS, 'blobs', 'tfds:<name>') or a file,
        # .csv/.tsv/.npy/.npz (dcjax/data.py: what each may hold).
        name="digits", data_dir="", normalize="auto", n_clusters=0,
        subsample=0, subsample_seed=0,
        label_column="",   # CSV/TSV: the column holding labels (evaluation only)
        tag_columns="",    # CSV/TSV: comma-separated columns holding tags in [0, 1], not features (dcjax/explain.py)
        # What you know of the clusters' sizes; it picks the launch's default
        # choice among seeds (dcjax/launch.py, `default_selector`): 'even'
        # (near-equal sizes: the seed with the most even sizes), 'unknown'
        # (no such assumption: the best silhouette in every seed's embedding),
        # 'auto' (even for the benchmark DATASETS, unknown for a file or array).
        cluster_sizes="auto",
        # only for 'blobs'; blob_seed also seeds 'uniform' and 'shuffled:<name>'
        n_samples=1000, n_features=10, blob_clusters=5, cluster_std=1.0, blob_seed=0))

    c.model = ml_collections.ConfigDict(dict(
        hidden_dims=(500, 500, 2000),
        embedding_dim=10,    # 0: the number of clusters (DECCS's original uses k)
        activation="relu",   # 'relu' as the papers; 'leaky_relu' as ClustPy
        weight_init="torch"))  # 'torch' (ClustPy's PyTorch defaults) or 'lecun' (flax)

    c.pretrain = ml_collections.ConfigDict(dict(epochs=100, learning_rate=1e-3))
    # optimizer 'adam' or 'sgd' (with momentum); the learning rate of clustering
    # epoch e is learning_rate * lr_decay**e.
    c.clustering = ml_collections.ConfigDict(dict(epochs=150, learning_rate=1e-4, optimizer="adam",
                                                  momentum=0.9, lr_decay=1.0))
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
    # UNSEEN (dcjax/methods/unseen.py): DCN, DEC or DKM with an unknown number
    # of clusters. Start from k_init clusters; a cluster dies when it shrinks
    # below t times its reference size. nn_loss=False drops the nearest-
    # neighbour loss (the paper's ablation); reference_code=True does what the
    # public code does where it departs from the paper (DEC/DKM centers stop
    # learning after the first removal; DCN's counts are not pruned).
    c.unseen = ml_collections.ConfigDict(dict(
        enabled=False, k_init=35, t=0.5, nn_loss=True, reference_code=False))
    # DECCS (dcjax/methods/deccs.py); a round is a clustering epoch.
    c.deccs = ml_collections.ConfigDict(dict(
        sample_fraction=0.5,         # of the data clustered by the ensemble each round ...
        large_sample_fraction=0.08,  # ... or this fraction when N > large_n
        large_n=11_000,
        min_cluster_size=5,          # rows in a cluster this small (any member) leave the round
        steps_per_round=500,         # SGD steps of the representation update per round
        mean_weight=0.1,             # the mean-pull term's weight once ramped up ...
        mean_rampup_rounds=6,        # ... after this many rounds (exp(-5(1-r/R)^2))
        min_weight=0.01,             # members that agree less than this with the others are left out
        patience=3,                  # stop after this many rounds without an agreement gain ...
        min_gain=0.001,              # ... of more than this
        classifier_c=1.0))           # inverse L2 strength of the members' logistic regressions

    c.checkpoint = ml_collections.ConfigDict(dict(
        # Per-epoch snapshots (embedding, assignments, centers) and records are
        # always kept: epoch selection needs them. Model states (params,
        # centers): 'replay' stores them only at resume points, and
        # checkpointing.load_state rebuilds any other epoch's by replaying the
        # deterministic training from the resume point before it (bit-identical);
        # 'every_epoch' stores every epoch's (~10 MB per seed-epoch at the
        # default network), thinned by orbax's retention when max_to_keep > 0
        # (the newest max_to_keep, every keep_period-th; max_to_keep > 0 alone
        # implies 'every_epoch').
        model_states="replay", max_to_keep=0, keep_period=0,
        # The full state, optimiser included: every resume_every epochs and at
        # the last. A killed run resumes from the newest and replays the epochs
        # after it. The newest two are kept, and for good every
        # keep_resume_every-th (a multiple of resume_every): restoring a
        # pruned epoch replays at most keep_resume_every - 1 epochs.
        resume_every=10, keep_resume_every=50,
        embedding_dtype="float32",  # 'float16' halves the snapshot size
        compress=False,  # zstd: ~25% smaller states, ~0.1 s more CPU per USPS save
        check_disk=True,  # refuse a run whose checkpoints would not fit the free disk
        # 'background': a writer thread saves each epoch while the device runs
        # the next ones (dcjax/epoch_writer.py); 'inline': the loop saves each
        # epoch itself, one epoch behind. The same files either way.
        writer="background"))
    # Tag supervision (dcjax/tags.py), off by default: weight (lambda_tag) > 0
    # adds a tag head trained by BCE; pairwise_weight > 0 DDC's pairwise loss on
    # pairs its explanations agree on (alpha: the ILP's coverage; gamma: Eq. 5's).
    # The tags: `file` (.csv/.npy/.npz, one row per data row), else dataset.tag_columns.
    c.tags = ml_collections.ConfigDict(dict(file="", weight=0.0, pairwise_weight=0.0, alpha=1.0, gamma=100.0))
    c.eval_chunk = 2048   # rows per chunk when embedding the whole data set
    c.progress = True
    # Write <workdir>/report.html (dcjax.report) when training ends.
    c.report = False
    # Train in a non-empty folder that is not a dcjax workdir (no
    # dcjax-workdir.json): its files of the same names are overwritten.
    c.allow_foreign_workdir = False
    return c


# The 'public' preset: the set-up of UNSEEN's public code (GitHub
# collinleiber/UNSEEN d0dd98b, unseen.py, run against ClustPy 2c02615 of the
# same day) where it differs from this repository's protocol. Each value and
# where the public code has it (tests/test_unseen_public.py checks them):
PUBLIC_SETUP = {
    # ClustPy FeedforwardAutoencoder(activation_fn=torch.nn.LeakyReLU) is the
    # default (clustpy/deep/neural_networks/feedforward_autoencoder.py:63), and
    # torch's default Linear initialisation.
    "model.activation": "leaky_relu",
    "model.weight_init": "torch",
    # KMeans(n_clusters=..., random_state=...) with scikit-learn's default
    # n_init ('auto': 1 start of k-means++ since 1.4), both for k_init
    # (clustpy/deep/_utils.py:354, run_initial_clustering) and for the final
    # k-means on the embedding (unseen.py:126).
    "kmeans.n_init": 1,
    # DEC/DKM centers replaced at a removal by a tensor the optimiser never
    # sees (unseen.py:255 DEC, :543 DKM); DCN's centers pruned, its counts not
    # (unseen.py:860).
    "unseen.reference_code": True,
    # get_dataloader(X, batch_size, shuffle=True, drop_last=False)
    # (clustpy/deep/_data_utils.py:276, the trainloader; and :333 via
    # get_trained_network, the pretraining): the ragged last batch is a step.
    "last_batch": "keep",
    # ClustPy's DKM loss weighs the unsquared distance (clustpy/deep/dkm.py:251,
    # (squared_diffs.sqrt() * probs).sum(1).mean(); UNSEEN's DKM module calls it,
    # unseen.py:470); the DKM paper and this repository's protocol, the squared one.
    "dkm.distance": "euclidean",
    # The rest is already what this repository's protocol uses: batch 256,
    # Adam lr 1e-3 (pretraining, 100 epochs) and 1e-4 (clustering, 150
    # epochs), one optimiser over network and centers whose state survives a
    # removal, k_init 35, t 0.5, DEC alpha 1 with the per-batch target, DKM
    # alpha 1000, DCN lambda 0.05, one global mean/std for the image sets.
    "batch_size": 256,
    "pretrain.learning_rate": 1e-3,
    "clustering.learning_rate": 1e-4,
}


def apply_presets(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Comma-separated presets: 'smoke' (tiny, seconds), 'seeds=N',
    'public' (the UNSEEN public code's set-up, PUBLIC_SETUP)."""
    for item in filter(None, (arg or "").split(",")):
        if item == "public":
            for field, value in PUBLIC_SETUP.items():
                section, _, name = field.rpartition(".")
                (c[section] if section else c)[name] = value
        elif item == "smoke":
            c.pretrain.epochs, c.clustering.epochs = 3, 3
            c.model.hidden_dims = (64, 64, 128)
            c.deccs.steps_per_round = 20
        elif item.startswith("seeds=") and item[len("seeds="):].isdigit():
            c.seeds = int(item.split("=", 1)[1])
        else:
            raise ConfigError(f"unknown config preset {item!r}; known presets: smoke, seeds=N, public "
                              "(after a colon: --config dkm_usps:smoke,seeds=4)")
    return c


def make_config(algorithm: str, dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`algorithm` is one of ALGORITHMS, or 'unseen_<algorithm>' for UNSEEN around it."""
    unseen = algorithm.startswith(UNSEEN_PREFIX)
    base = algorithm[len(UNSEEN_PREFIX):] if unseen else algorithm
    if base not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}, "
                          f"and {UNSEEN_PREFIX}<algorithm> for UNSEEN around dcn, dec or dkm", "algorithm")
    c = get_default_config()
    c.algorithm = base
    c.unseen.enabled = unseen
    c.dataset.name = dataset
    if base == "deccs":   # the original's rounds and optimiser: round 1, then 10 updates and rounds
        c.clustering.epochs = 11
        c.clustering.optimizer, c.clustering.learning_rate, c.clustering.lr_decay = "sgd", 1e-3, 0.9
    c = apply_presets(c, arg)
    if base == "ae_kmeans":
        c.clustering.epochs = 0
    return c


# ----------------------------------------------------------------------------
# Configs by name

NAMED_DATASETS = (*DATASETS, "blobs")


def config_names() -> list[str]:
    return ["default", *NAMED_ALGORITHMS, *(f"{a}_{d}" for a in NAMED_ALGORITHMS for d in NAMED_DATASETS)]


def config_from_name(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """'default' (DEC on digits, as configs/default.py), '<algorithm>' (on
    digits) or '<algorithm>_<dataset>' (as configs/<algorithm>_<dataset>.py),
    with presets `arg`."""
    if name == "default":
        return make_config("dec", "digits", arg)
    for algorithm in sorted(NAMED_ALGORITHMS, key=len, reverse=True):   # 'unseen_dec' before 'dec' 
        if name == algorithm:
            return make_config(algorithm, "digits", arg)
        if name.startswith(algorithm + "_") and name[len(algorithm) + 1:] in NAMED_DATASETS:
            return make_config(algorithm, name[len(algorithm) + 1:], arg)
    raise ConfigError(f"unknown config {name!r}: name a config file (.py), 'default', an algorithm "
                      f"({', '.join(NAMED_ALGORITHMS)}) or <algorithm>_<dataset> with a data set of "
                      f"{', '.join(NAMED_DATASETS)}, e.g. dkm_usps")


# ----------------------------------------------------------------------------
# Checks, before any compute

def flat_fields(c, prefix: str = "") -> dict:
    """{'dotted.field': value} of a config, as a ConfigDict or as its JSON dict."""
    out = {}
    for key, value in c.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# field: (test, what the value must be)
_RULES = {
    "seeds": (lambda v: v >= 1, "an integer >= 1 (seeds trained together)"),
    "seed": (lambda v: v >= 0, "an integer >= 0 (the first seed)"),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "pretrain.epochs": (lambda v: v >= 0, "an integer >= 0"),
    "clustering.epochs": (lambda v: v >= 0, "an integer >= 0"),
    "pretrain.learning_rate": (lambda v: math.isfinite(v) and v > 0, "a number > 0, finite"),
    "clustering.learning_rate": (lambda v: math.isfinite(v) and v > 0, "a number > 0, finite"),
    "clustering.momentum": (lambda v: math.isfinite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "clustering.lr_decay": (lambda v: math.isfinite(v) and v > 0, "a number > 0, finite"),
    "checkpoint.resume_every": (lambda v: v >= 1, "an integer >= 1 (epochs between resume points)"),
    "checkpoint.keep_resume_every": (lambda v: v >= 1, "an integer >= 1, a multiple of checkpoint.resume_every"),
    "kmeans.n_init": (lambda v: v >= 1, "an integer >= 1"),
    "eval_chunk": (lambda v: v >= 1, "an integer >= 1"),
    "dataset.n_clusters": (lambda v: v >= 0, "an integer >= 0 (0: the number of label classes)"),
    "dataset.subsample": (lambda v: v >= 0, "an integer >= 0 (0: every row)"),
    "model.embedding_dim": (lambda v: v >= 1, "an integer >= 1"),
    "tags.weight": (lambda v: v >= 0, "a number >= 0 (0: no tag head)"),
    "tags.pairwise_weight": (lambda v: v >= 0, "a number >= 0 (0: no pairwise loss)"),
    "tags.alpha": (lambda v: v > 0, "a number > 0"),
}
_CHOICES = {
    "algorithm": ALGORITHMS,
    "seed_parallelism": ("auto", "vmap", "loop"),
    "last_batch": ("drop", "keep"),
    "dataset.normalize": ("auto", "feature", "channel", "none", "tabular", "image"),
    "dataset.cluster_sizes": ("auto", "even", "unknown"),
    "checkpoint.writer": ("background", "inline"),
}


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first value no run can use: a field the
    default config does not have (a typo in a config file), a count or rate
    out of range, an unknown choice."""
    known = flat_fields(get_default_config())
    if c.get("algorithm") in ALGORITHMS:   # an algorithm's config may add fields of its own
        known |= flat_fields(make_config(c.algorithm, "digits"))
    for field, value in flat_fields(c).items():
        if field not in known:
            raise ConfigError(f"unknown config field {field!r}; see dcjax/config.py for the fields", field)
        if field in _CHOICES and value not in _CHOICES[field]:
            raise ConfigError(f"{field} = {value!r} is not one of {', '.join(map(str, _CHOICES[field]))}", field)
        if field in _RULES:
            test, must = _RULES[field]
            integer = must.startswith("an integer")
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not test(value):
                raise ConfigError(f"{field} = {value!r} is invalid: it must be {must}", field)
    if "tags" in c and (c.tags.weight > 0 or c.tags.pairwise_weight > 0) and not (
            c.tags.file or c.dataset.get("tag_columns", "")):
        raise ConfigError("tags.weight / tags.pairwise_weight > 0 need tags: set tags.file or dataset.tag_columns",
                          "tags.file")
    for field in ("pretrain.epochs", "clustering.epochs"):
        _check_selectable(c, field)
    every, keep = int(c.checkpoint.resume_every), int(c.checkpoint.keep_resume_every)
    if keep % every:
        raise ConfigError(f"checkpoint.keep_resume_every = {keep} must be a multiple of checkpoint.resume_every "
                          f"({every})", "checkpoint.keep_resume_every")
    if any(not isinstance(h, int) or h < 1 for h in c.model.hidden_dims):
        raise ConfigError(f"model.hidden_dims = {tuple(c.model.hidden_dims)!r}: each width must be an integer >= 1",
                          "model.hidden_dims")


def _check_selectable(c, field: str) -> None:
    """The label-free selection compares the epochs of one phase: the
    clustering epochs 0.. when there are two, else the pretraining epochs
    1.. (AE+k-means always). With fewer than two it would fail after all the
    training (selection.selection_phase), so such settings are refused here."""
    if field != "pretrain.epochs" or (c.algorithm != "ae_kmeans" and int(c.clustering.epochs) >= 1):
        return
    why = "for ae_kmeans" if c.algorithm == "ae_kmeans" else "with clustering.epochs = 0"
    if c.get("pretrained_from"):
        raise ConfigError(f"clustering.epochs = 0 with pretrained_from leaves no epochs to choose among (the "
                          "pretraining epochs are in the other workdir); set clustering.epochs >= 1",
                          "clustering.epochs")
    if int(_value(c, field)) < 2:
        raise ConfigError(f"{field} = {_value(c, field)!r} is too few {why}: the label-free epoch selection then "
                          "compares pretraining epochs, so it needs at least 2"
                          + ("" if c.algorithm == "ae_kmeans" else " (or clustering.epochs >= 1)"), field)


def _value(c, field: str):
    for part in field.split("."):
        c = c[part]
    return c


def seed_ids(config) -> list[int]:
    """The seed ids of a launch: `seeds` consecutive ids from `seed`."""
    return list(range(int(config.seed), int(config.seed) + int(config.seeds)))
