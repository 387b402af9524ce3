"""The one training loop: pretraining, k-means initialisation, clustering.

`make_train(config, n, d, k)` builds pure per-seed functions — an epoch is one
`lax.scan` over mini-batches — and returns them `jit(vmap(...))`'d over seeds
(`jit(lax.map(...))`'d on one CPU, see below), so any number of seeds is one
compiled program. `Trainer.train(keys, x)` is
the whole run as a pure function of the seed keys (benchmarks, tests);
`train_and_evaluate` drives the same compiled epoch functions from Python,
writing an orbax checkpoint after every epoch, and resumes a killed run.
Both give bit-identical numbers: they run the same executables.

Seeds go through `vmap` (one batched program: what a GPU wants, and what
shards the seed axis over devices) or `lax.map` ('loop': the one-seed program
once per seed). XLA may sum in another order when the number of vmapped seeds
changes, so under vmap a seed alone and the same seed among others agree to
float round-off (~1e-6 after an epoch); under loop they are bit-identical.
On CPU, loop is also faster: XLA lays out the batched weight gradients
transposed, so every Adam step pays extra transposes (USPS pretraining epoch,
2 cores: 0.82 s vmap vs 0.74 s loop for 1 seed, 15.1 vs 11.7 s for 16), and
vmap brings no parallelism the matmuls do not already have. The default
'auto' therefore means loop on a single CPU device and vmap otherwise.

Randomness: seed s uses `PRNGKey(s)`; the batch order of epoch e of phase p is
drawn from `fold_in(fold_in(key, p), e)`, so a seed gives the same run alone
or among others, and a resumed run the same as an uninterrupted one.
"""
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.cluster import KMeans

from dcjax import checkpointing, data, methods
from dcjax import config as config_lib
from dcjax.methods.base import EpochEnd, LossInputs, no_center_rule
from dcjax.models import make_autoencoder

log = logging.getLogger(__name__)

PRETRAIN, CLUSTERING = 1, 2  # folded into the seed key: one random stream per phase
EPOCH_END = 4                # the stream of end-of-epoch rules (evaluate.py's k-means uses 3)


def kmeans_host(z: np.ndarray, seed: np.ndarray, n_clusters: int, n_init: int):
    """scikit-learn k-means on one seed's embedding (host side, via pure_callback)."""
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=int(seed))
    labels = km.fit_predict(np.asarray(z, np.float64))
    return km.cluster_centers_.astype(np.float32), labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Seed-vmapped, jitted functions of one configuration. State leaves have
    the seed axis first; `x` (N, d) is shared by all seeds."""
    config: ml_collections.ConfigDict
    n_clusters: int               # centers per seed (UNSEEN: k_init; state['active'] says which are alive)
    init_pretrain: Callable       # keys -> state
    pretrain_epoch: Callable      # (state, x) -> (state, out)
    init_clustering: Callable     # (pretrain params, keys, x) -> (state, out)
    cluster_epoch: Callable       # (state, x) -> (state, out)
    pretrain_snapshot: Callable   # (state, x) -> snapshot
    cluster_snapshot: Callable    # (state, x) -> snapshot
    train: Callable               # (keys, x) -> (pretrain state, clustering state, history)
                                  # history["assignments"]: (S, epochs + 1, N), epoch 0 = k-means;
                                  # history["active"]: (S, epochs + 1, k), the clusters alive
    embed: Callable               # (ae params, x) -> (S, N, e)


def _clustering_optimizer(learning_rate: float, uses_decoder: bool, kind: str = "adam",
                          momentum: float = 0.9) -> optax.GradientTransformation:
    """Adam (or SGD with momentum, as DECCS uses) over what the clustering loss
    can move. A method without reconstruction (DEC) leaves the decoder out: its
    gradient is zero, so Adam would never change it, yet would still update
    moments and weights of half the network every step (PyTorch skips
    parameters without a gradient; ClustPy's DEC relies on that). Results are
    identical either way."""
    if kind == "adam":
        adam = optax.adam(learning_rate)
    elif kind == "sgd":
        adam = optax.sgd(learning_rate, momentum=momentum or None)
    else:
        raise ValueError(f"clustering.optimizer must be 'adam' or 'sgd', got {kind!r}")
    if uses_decoder:
        return adam

    def labels(params):
        return {"ae": {name: jax.tree.map(lambda _: "frozen" if name.startswith("decoder") else "train", layer)
                       for name, layer in params["ae"].items()},
                "centers": "train"}
    return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()}, labels)


def resolve_seed_parallelism(setting: str) -> str:
    """'auto' -> 'loop' on a single CPU device (faster there, and bit-identical
    per seed), 'vmap' on accelerators or several devices (parallel, shardable)."""
    if setting == "auto":
        return "loop" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    if setting not in ("vmap", "loop"):
        raise ValueError(f"seed_parallelism must be 'auto', 'vmap' or 'loop', got {setting!r}")
    return setting


def make_train(config: ml_collections.ConfigDict, n: int, d: int, n_clusters: int) -> Trainer:
    """`n_clusters`: the data set's (or configured) k. A method that starts
    from an upper bound (UNSEEN) keeps `methods.n_centers(config, k)` centers instead."""
    model = make_autoencoder(d, config.model, n_clusters)
    parallelism = resolve_seed_parallelism(config.seed_parallelism)
    if methods.unseen_enabled(config):
        methods.unseen.check(config, n_samples=n)
    method = methods.get_method(config)
    n_clusters = methods.n_centers(config, n_clusters)
    batch_size = int(config.batch_size)
    # Equal chunks of at most eval_chunk rows: the least padding for that many chunks.
    chunk = -(-n // -(-n // min(int(config.eval_chunk), n)))
    pretrain_tx = optax.adam(config.pretrain.learning_rate)
    cluster_tx = _clustering_optimizer(config.clustering.learning_rate, method.uses_decoder,
                                       config.clustering.get("optimizer", "adam"),
                                       float(config.clustering.get("momentum", 0.9)))
    # The learning rate of clustering epoch e (0-based) is lr * lr_decay**e (DECCS: 0.9 per round).
    lr_decay = float(config.clustering.get("lr_decay", 1.0))
    snapshot_dtype = jnp.dtype(config.checkpoint.embedding_dtype)

    def encode(params, x):
        return model.apply({"params": params}, x, method=model.encode)

    def embed(params, x):
        """Full-data embedding in fixed-size chunks, so memory stays bounded."""
        n_chunks = -(-n // chunk)
        padded = jnp.pad(x, ((0, n_chunks * chunk - n), (0, 0))).reshape(n_chunks, chunk, d)
        z = jax.lax.map(lambda xb: encode(params, xb), padded)
        return z.reshape(n_chunks * chunk, -1)[:n]

    def epoch_batches(key, phase, epoch):
        return data.batch_indices(jax.random.fold_in(jax.random.fold_in(key, phase), epoch), n, batch_size)

    # -- pretraining ---------------------------------------------------------
    def init_pretrain(key):
        params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, d), jnp.float32))["params"]
        return {"params": params, "opt_state": pretrain_tx.init(params), "key": key,
                "epoch": jnp.zeros((), jnp.int32)}

    def pretrain_snapshot(state, x):
        return {"embedding": embed(state["params"], x).astype(snapshot_dtype)}

    def pretrain_epoch(state, x):
        def step(carry, idx):
            params, opt_state = carry
            xb = x[idx]

            def loss_fn(p):
                _, x_rec = model.apply({"params": p}, xb)
                return jnp.mean(jnp.square(xb - x_rec))

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = pretrain_tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {"reconstruction": loss}

        batches = epoch_batches(state["key"], PRETRAIN, state["epoch"])
        (params, opt_state), losses = jax.lax.scan(step, (state["params"], state["opt_state"]), batches)
        state = {**state, "params": params, "opt_state": opt_state, "epoch": state["epoch"] + 1}
        return state, {"losses": losses, **pretrain_snapshot(state, x)}

    # -- clustering ----------------------------------------------------------
    # The clustering state holds `active`, a (k,) bool mask of the clusters
    # alive: all True unless the method's end-of-epoch rule removes some
    # (UNSEEN). Shapes never change; a dead center is masked everywhere.
    def snapshot_of(state, z):
        centers, active = state["params"]["centers"], state["active"]
        if method.partition is None:
            partition = {"assignments": method.assign(centers, z, active)}
        else:
            partition = method.partition(centers, state["extras"], z)
        labels = partition["assignments"]
        return {"embedding": z.astype(snapshot_dtype), **partition, "centers": centers,
                "cluster_sizes": jnp.bincount(labels, length=n_clusters).astype(jnp.int32),
                "active": active}

    def cluster_snapshot(state, x):
        return snapshot_of(state, embed(state["params"]["ae"], x))

    def init_clustering(ae_params, key, x):
        z = embed(ae_params, x)
        seed = jax.random.randint(jax.random.fold_in(key, CLUSTERING), (), 0, 2 ** 31 - 1)
        shapes = (jax.ShapeDtypeStruct((n_clusters, z.shape[1]), jnp.float32),
                  jax.ShapeDtypeStruct((n,), jnp.int32))
        centers, labels = jax.pure_callback(
            lambda zz, s: kmeans_host(zz, s, n_clusters, int(config.kmeans.n_init)),
            shapes, z, seed, vmap_method="sequential")
        extras = method.init(z, centers, labels)
        if method.init_centers is not None:
            centers = method.init_centers(z, centers, labels)
        params = {"ae": ae_params, "centers": centers}
        state = {"params": params, "opt_state": cluster_tx.init(params), "key": key,
                 "extras": extras, "epoch": jnp.zeros((), jnp.int32),
                 "active": jnp.ones((n_clusters,), bool)}
        return state, snapshot_of(state, z)

    def cluster_epoch(state, x):
        epoch, params, active = state["epoch"], state["params"], state["active"]
        extras = method.begin_epoch(state["extras"], params["centers"], embed(params["ae"], x), epoch, active)
        updating = None if method.updates is None else method.updates(extras)

        def step(carry, idx):
            params, opt_state, extras = carry
            xb = x[idx]

            def loss_fn(p):
                centers = p["centers"] if method.learn_centers else jax.lax.stop_gradient(p["centers"])
                if method.uses_decoder:
                    z, x_rec = model.apply({"params": p["ae"]}, xb)
                else:
                    z, x_rec = encode(p["ae"], xb), None
                return method.loss(LossInputs(z, xb, x_rec, centers, extras, idx, epoch, active))

            (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, new_opt_state = cluster_tx.update(grads, opt_state, params)
            if method.init_centers is None:
                # A dead center has no gradient, but Adam's momentum would still move it: it stays put.
                updates = {**updates, "centers": jnp.where(active[:, None], updates["centers"], 0.0)}
            if lr_decay != 1.0:
                updates = jax.tree.map(lambda u: u * lr_decay ** epoch.astype(u.dtype), updates)
            new_params = optax.apply_updates(params, updates)
            if updating is None:
                params, opt_state = new_params, new_opt_state
            else:   # a method that has stopped keeps its parameters and optimiser state
                params, opt_state = jax.tree.map(lambda new, old: jnp.where(updating, new, old),
                                                 (new_params, new_opt_state), (params, opt_state))
            if method.after_step is not no_center_rule:
                extras, centers = method.after_step(extras, params["centers"], encode(params["ae"], xb), idx,
                                                    active)
                params = {**params, "centers": centers}
            return (params, opt_state, extras), parts

        if method.batches is None:
            batches = epoch_batches(state["key"], CLUSTERING, epoch)
        else:
            batches = method.batches(extras, jax.random.fold_in(jax.random.fold_in(state["key"], CLUSTERING), epoch))
        (params, opt_state, extras), losses = jax.lax.scan(
            step, (params, state["opt_state"], extras), batches)
        z = embed(params["ae"], x)   # once: for the end-of-epoch rule and the snapshot
        if method.end_epoch is not None:
            key = jax.random.fold_in(jax.random.fold_in(state["key"], EPOCH_END), epoch + 1)
            extras, centers, active = method.end_epoch(EpochEnd(z, params["centers"], active, extras, epoch + 1, key))
            params = {**params, "centers": centers}
        state = {**state, "params": params, "opt_state": opt_state, "extras": extras, "epoch": epoch + 1,
                 "active": active}
        return state, {"losses": losses, **snapshot_of(state, z)}

    if parallelism == "vmap":
        def over_seeds(f, axes):
            return jax.jit(jax.vmap(f, in_axes=axes))
    else:
        def over_seeds(f, axes):
            # lax.map runs the one-seed program once per seed: bit-identical
            # results for a seed whatever the number of seeds in the launch.
            def looped(*args):
                per_seed = [a for a, ax in zip(args, axes) if ax == 0]
                shared = [a for a, ax in zip(args, axes) if ax is None]

                def one(seed_args):
                    it_seed, it_shared = iter(seed_args), iter(shared)
                    return f(*[next(it_seed) if ax == 0 else next(it_shared) for ax in axes])
                return jax.lax.map(one, per_seed)
            return jax.jit(looped)

    def train(keys, x):
        """The whole run without checkpoints, through the same compiled epoch
        functions as `train_and_evaluate`, so both give identical numbers."""
        pstate = trainer.init_pretrain(keys)
        for _ in range(int(config.pretrain.epochs)):
            pstate, _ = trainer.pretrain_epoch(pstate, x)
        kept = ("assignments", "active")   # not the embeddings: they would pile up over the epochs
        cstate, snap = trainer.init_clustering(pstate["params"], keys, x)
        history = [{name: snap[name] for name in kept}]
        for _ in range(int(config.clustering.epochs)):
            cstate, out = trainer.cluster_epoch(cstate, x)
            history.append({name: out[name] for name in kept})
        return pstate, cstate, {name: jnp.stack([h[name] for h in history], axis=1) for name in kept}

    trainer = Trainer(
        config=config, n_clusters=n_clusters,
        init_pretrain=over_seeds(init_pretrain, (0,)),
        pretrain_epoch=over_seeds(pretrain_epoch, (0, None)),
        init_clustering=over_seeds(init_clustering, (0, 0, None)),
        cluster_epoch=over_seeds(cluster_epoch, (0, None)),
        pretrain_snapshot=over_seeds(pretrain_snapshot, (0, None)),
        cluster_snapshot=over_seeds(cluster_snapshot, (0, None)),
        train=train,
        embed=over_seeds(embed, (0, None)),
    )
    return trainer


def seed_sharding(n_seeds: int):
    """Shard the seed axis over as many local devices as divide the seeds.

    With one device this is a no-op. The same code runs on several hosts
    under `jax.distributed` (see `dcjax.main --distributed`)."""
    devices = jax.devices()
    usable = max(g for g in range(1, len(devices) + 1) if n_seeds % g == 0)
    mesh = jax.sharding.Mesh(np.asarray(devices[:usable]), ("seeds",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def seed_keys(config) -> jax.Array:
    """One PRNGKey per seed id: seed s is the same stream in any launch."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seed_ids(config)])


def seed_ids(config) -> list[int]:
    return list(range(int(config.seed), int(config.seed) + int(config.seeds)))


# ----------------------------------------------------------------------------
# The driver: per-epoch checkpoints, records, resume, summary.

# Settings that may differ when a killed or finished run is continued.
_RESUMABLE_CHANGES = ("progress", "pretrain.epochs", "clustering.epochs", "checkpoint.", "eval_chunk")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _settle_seed_parallelism(config, workdir: Path):
    """Replace 'auto' by what runs: the setting of the run being continued
    (so a resumed run stays bit-identical to an uninterrupted one), else the
    choice for this machine. config.json then records the real setting."""
    if config.seed_parallelism != "auto":
        return config
    path = workdir / "config.json"
    before = json.loads(path.read_text()).get("seed_parallelism") if path.exists() else None
    config = config.copy_and_resolve_references()
    config.seed_parallelism = before if before in ("vmap", "loop") else resolve_seed_parallelism("auto")
    return config


def _write_config(config, workdir: Path):
    """Write config.json once; refuse to continue a run with another setup. A
    setting that dcjax gained after the run started is no change at its default."""
    path = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists():
        before = _flatten(json.loads(path.read_text()))
        now = _flatten(current)
        defaults = _flatten(json.loads(config_lib.get_default_config().to_json_best_effort()))
        changed = sorted(k for k in set(before) | set(now)
                         if before.get(k) != now.get(k) and not k.startswith(_RESUMABLE_CHANGES)
                         and not (k not in before and k in defaults and now[k] == defaults[k]))
        if changed:
            raise ValueError(f"{workdir} holds a run with a different configuration "
                             f"({', '.join(changed)}); use a new --workdir")
    path.write_text(json.dumps(current, indent=2))


def _record(epoch: int, seconds: float, losses: dict, sizes=None, active=None) -> dict:
    losses = {name: np.asarray(v, np.float64) for name, v in losses.items()}  # (S, batches)
    for name, v in losses.items():
        bad = np.where(~np.isfinite(v).all(axis=1))[0]
        if bad.size:
            raise FloatingPointError(f"non-finite {name} loss in epoch {epoch} for seed index(es) "
                                     f"{bad.tolist()}; lower the learning rate or check the data")
    rec = {"epoch": epoch, "seconds": seconds,
           "loss": {k: v.mean(axis=1).tolist() for k, v in losses.items()},
           "batch_loss": {k: v.tolist() for k, v in losses.items()}}
    if sizes is not None:
        rec["cluster_sizes"] = np.asarray(sizes).tolist()
    if active is not None:   # (S, k) mask -> clusters alive per seed (UNSEEN removes some)
        rec["active_clusters"] = np.asarray(active).sum(axis=-1).tolist()
    return rec


def _run_phase(name: str, ckpts: checkpointing.PhaseCheckpoints, state, epoch_fn, n_epochs: int,
               x, progress: bool):
    """Run epochs state.epoch+1 .. n_epochs, saving after each. Returns the state."""
    from tqdm.auto import tqdm

    # Epoch e+1 is dispatched (JAX runs it asynchronously) before epoch e is
    # waited for and saved, so the host work of a save (the record, orbax's
    # synchronous part) overlaps the next epoch's compute instead of leaving
    # the device idle. Nothing is donated, so the saved arrays stay valid.
    # `seconds` is the time between two epochs' results: the epoch's cost
    # in a running loop, saves included.
    start = int(np.asarray(state["epoch"]).reshape(-1)[0])
    bar = tqdm(total=n_epochs, initial=start, desc=name, disable=not progress, unit="epoch")
    last_done = time.perf_counter()

    def finish(epoch, epoch_state, out):
        nonlocal last_done
        out = dict(out)
        losses = jax.device_get(out.pop("losses"))
        now = time.perf_counter()
        record = _record(epoch, now - last_done, losses, out.get("cluster_sizes"), out.get("active"))
        last_done = now
        ckpts.save(epoch, epoch_state, out, record, last=epoch == n_epochs)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(record['loss']['total' if 'total' in losses else 'reconstruction']):.4g}")

    pending = None
    for epoch in range(start + 1, n_epochs + 1):
        state, out = epoch_fn(state, x)
        if pending is not None:
            finish(*pending)
        pending = (epoch, state, out)
    if pending is not None:
        finish(*pending)
    bar.close()
    return state


def _resume(ckpts: checkpointing.PhaseCheckpoints, abstract_state, snapshot_fn, x):
    """Restore the newest resume point of a phase, or None. What a killed run
    wrote after it (snapshots, model states, records) is dropped, to be
    replayed; a snapshot or model state of that epoch lost in the kill is rewritten."""
    epoch = ckpts.latest_epoch()
    if epoch is None:   # nothing to resume from: what a run killed before its first resume point wrote goes
        ckpts.discard_after(-1)
        return None
    state = ckpts.restore(epoch, abstract_state)
    ckpts.discard_after(epoch)
    ckpts.ensure_epoch(epoch, state, lambda: snapshot_fn(state, x))
    log.info("resumed %s from epoch %d", ckpts.root.name, epoch)
    return state


def _pretrained_params(config, keys, trainer, x):
    """The final pretrained autoencoder of another run, for our seeds."""
    source = Path(config.pretrained_from)
    other = checkpointing.load_config(source)
    for section in ("dataset", "model"):
        if json.loads(other[section].to_json()) != json.loads(config[section].to_json()):
            raise ValueError(f"pretrained_from={source}: its {section} config differs from this run's")
    theirs = seed_ids(other)
    missing = [s for s in seed_ids(config) if s not in theirs]
    if missing:
        raise ValueError(f"pretrained_from={source} has no seed(s) {missing}; it has {theirs}")
    final = int(other.pretrain.epochs)
    if final not in checkpointing.list_epochs(source, "pretrain", "state"):
        raise ValueError(f"pretrained_from={source} has no state for its final pretraining epoch {final}")
    abstract = checkpointing.model_state(
        jax.eval_shape(trainer.init_pretrain, jnp.stack([jax.random.PRNGKey(s) for s in theirs])))
    state = checkpointing.load_state(source, final, "pretrain", target=abstract)
    rows = jnp.asarray([theirs.index(s) for s in seed_ids(config)])
    return jax.tree.map(lambda a: a[rows], state["params"])


def summarize(config, dataset, trainer, cstate, x, workdir: Path) -> dict:
    """Per-seed scores of the final epoch: the algorithm's own assignment and,
    as ClustPy reports, a k-means re-clustering of the final embedding with
    the number of clusters still active (the data set's k for a fixed-k
    method; UNSEEN's estimate, `n_clusters`, otherwise); and the label-free
    chance test of the final partitions (`dcjax.chance`)."""
    from dcjax import chance, metrics

    snap = jax.device_get(trainer.cluster_snapshot(cstate, x))
    k = trainer.n_clusters
    n_classes = int(dataset.y.max()) + 1 if dataset.y is not None else None
    rows = []
    for i, seed in enumerate(seed_ids(config)):
        z = np.asarray(snap["embedding"][i], np.float64)
        n_active = int(np.sum(snap["active"][i]))
        kmeans_labels = KMeans(n_clusters=n_active, n_init=int(config.kmeans.n_init),
                               random_state=seed).fit_predict(z)
        row = {"seed": seed, "epoch": int(np.asarray(cstate["epoch"])[i]), "n_clusters": n_active,
               "cluster_sizes": np.bincount(snap["assignments"][i], minlength=k).tolist()}
        if dataset.y is not None:
            for label, pred, n_pred in (("algorithm", snap["assignments"][i], k),
                                        ("kmeans_on_embedding", kmeans_labels, n_active)):
                scores = metrics.label_based_scores(jnp.asarray(dataset.y), jnp.asarray(pred), n_pred,
                                                    n_classes=n_classes)
                row[label] = {name: float(v) for name, v in scores.items()}
        rows.append(row)
    summary = {"algorithm": methods.algorithm_label(config), "dataset": config.dataset.name, "seeds": rows,
               "n_clusters_mean": float(np.mean([r["n_clusters"] for r in rows])),
               "n_clusters_std": float(np.std([r["n_clusters"] for r in rows])),
               "chance": chance.chance_test(snap["assignments"], k)}
    if dataset.y is not None:
        for label in ("algorithm", "kmeans_on_embedding"):
            summary[f"{label}_mean"] = {m: float(np.mean([r[label][m] for r in rows])) for m in rows[0][label]}
            summary[f"{label}_std"] = {m: float(np.std([r[label][m] for r in rows])) for m in rows[0][label]}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict, workdir: Path) -> str:
    lines = [f"{summary['algorithm']} on {summary['dataset']}: checkpoints in {workdir.absolute()}"]
    for row in summary["seeds"]:
        parts = [f"seed {row['seed']:>3}", f"k {row.get('n_clusters', '?')}"]
        for label in ("algorithm", "kmeans_on_embedding"):
            if label in row:
                s = row[label]
                parts.append(f"{label}: ACC {s['acc']:.4f} NMI {s['nmi']:.4f} ARI {s['ari']:.4f}")
        lines.append("  ".join(parts))
    for label in ("algorithm", "kmeans_on_embedding"):
        if f"{label}_mean" in summary:
            m, s = summary[f"{label}_mean"], summary[f"{label}_std"]
            lines.append(f"mean ± sd ({label}): " + ", ".join(f"{k.upper()} {m[k]:.4f} ± {s[k]:.4f}" for k in m))
    if "chance" in summary:
        lines.append(summary["chance"]["message"])
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train all seeds of `config` in `workdir`, checkpointing every epoch;
    continue where a previous (killed) run in the same workdir stopped."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.algorithm not in methods.REGISTRY:
        raise ValueError(f"unknown algorithm {config.algorithm!r}; known: {', '.join(sorted(methods.REGISTRY))}")
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    data.validate(dataset.x, dataset.y, k, int(config.batch_size))
    if int(config.seeds) < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    config = _settle_seed_parallelism(config, workdir)
    _write_config(config, workdir)

    n, d = dataset.x.shape
    trainer = make_train(config, n, d, k)
    per_seed, replicated = seed_sharding(int(config.seeds))
    x = jax.device_put(jnp.asarray(dataset.x), replicated)
    keys = jax.device_put(seed_keys(config), per_seed)
    keep = dict(max_to_keep=int(config.checkpoint.max_to_keep), keep_period=int(config.checkpoint.keep_period),
                compress=bool(config.checkpoint.get("compress", False)),
                resume_every=int(config.checkpoint.get("resume_every", 1)))
    pre_ckpts = checkpointing.PhaseCheckpoints(workdir, "pretrain", **keep)
    clu_ckpts = checkpointing.PhaseCheckpoints(workdir, "clustering", **keep)
    try:
        def sharded(shapes):  # abstract targets, so orbax restores onto the seed mesh
            return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=per_seed), shapes)
        pstate_shape = sharded(jax.eval_shape(trainer.init_pretrain, keys))
        cstate_shape = sharded(jax.eval_shape(trainer.init_clustering, pstate_shape["params"], keys, x)[0])
        cstate = _resume(clu_ckpts, cstate_shape, trainer.cluster_snapshot, x)
        if cstate is None:
            if config.pretrained_from:
                ae_params = jax.device_put(_pretrained_params(config, keys, trainer, x), per_seed)
            else:
                pstate = _resume(pre_ckpts, pstate_shape, trainer.pretrain_snapshot, x)
                if pstate is None:
                    pstate = trainer.init_pretrain(keys)
                pstate = _run_phase("pretrain", pre_ckpts, pstate, trainer.pretrain_epoch,
                                    int(config.pretrain.epochs), x, config.progress)
                ae_params = pstate["params"]
            cstate, snapshot = trainer.init_clustering(ae_params, keys, x)
            clu_ckpts.save(0, cstate, snapshot, None)
        cstate = _run_phase(config.algorithm, clu_ckpts, cstate, trainer.cluster_epoch,
                            int(config.clustering.epochs), x, config.progress)
    finally:
        pre_ckpts.wait()
        clu_ckpts.wait()
        pre_ckpts.close()
        clu_ckpts.close()
    summary = summarize(config, dataset, trainer, cstate, x, workdir)
    log.info("finished; checkpoints and summary.json in %s", workdir.absolute())
    return summary
