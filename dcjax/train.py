"""The one training loop: pretraining, k-means initialisation, clustering.

`make_train(config, n, d, k)` builds pure per-seed functions — an epoch is one
`lax.scan` over mini-batches — and returns them `jit(vmap(...))`'d over seeds
(`jit(lax.map(...))`'d on one CPU, see below), so any number of seeds is one
compiled program. `Trainer.train(keys, x)` is
the whole run as a pure function of the seed keys (benchmarks, tests);
`train_and_evaluate` drives the same compiled epoch functions from Python,
writing an orbax checkpoint after every epoch, and resumes a killed run.
Both give bit-identical numbers: they run the same executables. So does
`replay_to_epoch`, through which `checkpointing.load_state` rebuilds an
epoch whose model state was not stored. The driver also refuses early what
cannot finish (an unwritable or locked workdir, too little disk), freezes a
seed whose loss goes non-finite while the others train on, and runs under
`jax.distributed` (the seed axis over every process's devices).

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
import errno
import functools
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
from dcjax import workdir as workdir_lib
from dcjax import config as config_lib
from dcjax.config import ConfigError
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
    """Shard the seed axis over as many devices as divide the seeds.

    With one device this is a no-op. Under `jax.distributed` (`dcjax.main
    --distributed`) `jax.devices()` are every process's devices, so the mesh
    is global; it must then reach every process."""
    devices = jax.devices()
    usable = max(g for g in range(1, len(devices) + 1) if n_seeds % g == 0)
    processes = {d.process_index for d in devices[:usable]}
    if len(processes) < jax.process_count():
        raise ValueError(f"{n_seeds} seeds cannot be spread over the {len(devices)} devices of "
                         f"{jax.process_count()} processes; use a multiple of {len(devices)} seeds")
    mesh = jax.sharding.Mesh(np.asarray(devices[:usable]), ("seeds",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def place(tree, sharding):
    """Host arrays (numpy) onto a sharding, which may span several processes:
    each process gives the slices of its own devices (the same host data everywhere)."""
    def one(value):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.tree.map(one, tree)


def to_host(tree):
    """Device arrays as numpy, also where they are spread over several processes."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def start_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None):
    """`jax.distributed.initialize`. What is not given JAX reads from the
    cluster (SLURM, Open MPI, Kubernetes, Cloud TPU) or, for the address,
    JAX_COORDINATOR_ADDRESS. CPU processes exchange arrays through gloo;
    accelerators use their own collectives, untouched by this."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def seed_keys(config) -> jax.Array:
    """One PRNGKey per seed id: seed s is the same stream in any launch."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seed_ids(config)])


def seed_ids(config) -> list[int]:
    return list(range(int(config.seed), int(config.seed) + int(config.seeds)))


# ----------------------------------------------------------------------------
# The driver: per-epoch checkpoints, records, resume, faults, summary.

LOCK_FILE = workdir_lib.LOCK_FILE
WorkdirBusyError = workdir_lib.WorkdirBusyError
changed_settings = workdir_lib.changed_settings
_workdir_lock = workdir_lib.lock
_check_disk = workdir_lib.check_disk
_agree = workdir_lib.agree


def _settle_seed_parallelism(config, workdir: Path):
    """Replace 'auto' by what runs: the setting of the run being continued
    (so a resumed run stays bit-identical to an uninterrupted one), else the
    choice for this machine. config.json then records the real setting."""
    if config.seed_parallelism != "auto":
        return config
    before = (workdir_lib.read_config(workdir) or {}).get("seed_parallelism")
    config = config.copy_and_resolve_references()
    config.seed_parallelism = before if before in ("vmap", "loop") else resolve_seed_parallelism("auto")
    return config


def _write_config(config, workdir: Path):
    """Write config.json once; refuse to continue a run with another setup."""
    workdir_lib.write_config(config, workdir, write=jax.process_index() == 0)


def disk_plans(config, trainer: Trainer, x, shapes, pre_ckpts, clu_ckpts) -> dict[str, dict[str, int]]:
    """What the epochs still to train will write, per phase and kind of
    checkpoint (`PhaseCheckpoints.planned_bytes`), from the abstract states
    `shapes` (pretraining, clustering) and the epoch functions' outputs."""
    def plan(ckpts, epoch_fn, state_shape, first, last):
        out = jax.eval_shape(epoch_fn, state_shape, x)[1]
        losses = out.pop("losses")
        done = ckpts.latest_epoch()
        return ckpts.planned_bytes(first - 1 if done is None else done, last, state_shape, out,
                                   _record_bytes(losses, trainer.n_clusters))
    plans = {"clustering": plan(clu_ckpts, trainer.cluster_epoch, shapes[1], 0, int(config.clustering.epochs))}
    if not config.pretrained_from and clu_ckpts.latest_epoch() is None:
        plans["pretrain"] = plan(pre_ckpts, trainer.pretrain_epoch, shapes[0], 1, int(config.pretrain.epochs))
    return plans


def _record_bytes(losses_shape: dict, n_clusters: int) -> int:
    """Bytes of one records.jsonl line: ~24 characters per float in JSON."""
    floats = sum(int(np.prod(s.shape)) + s.shape[0] for s in losses_shape.values())
    return 24 * floats + 8 * n_clusters * next(iter(losses_shape.values())).shape[0] + 200


def _is_disk_full(error: BaseException) -> bool:
    """Whether a full disk is behind an error (orbax reports tensorstore's
    RESOURCE_EXHAUSTED with the OS error code inside its message)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error) or "os_error_code='28'" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


# -- one epoch of every seed; a seed whose loss goes non-finite is frozen, the others go on

@jax.jit
def _keep_finite(before, after, losses, alive):
    """`after` for the seeds still alive whose epoch losses are all finite,
    `before` (their last finite state) for the others, and the new alive mask.
    On device and exact (a select), so the healthy seeds' numbers are
    those of a launch without the diverging one."""
    finite = alive
    for loss in jax.tree.leaves(losses):
        finite = finite & jnp.isfinite(loss).reshape(loss.shape[0], -1).all(axis=1)

    def pick(new, old):
        return jnp.where(finite.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return jax.tree.map(pick, after, before), finite


def _alive_at(workdir: Path, phase: str, epoch: int, n_seeds: int) -> np.ndarray:
    """Seeds not diverged up to `epoch` of `phase`, by the records (a seed
    frozen in pretraining stays frozen in clustering)."""
    alive = np.ones(n_seeds, bool)
    records = [r for p in checkpointing.PHASES[:checkpointing.PHASES.index(phase)]
               for r in checkpointing.load_records(workdir, p)]
    records += [r for r in checkpointing.load_records(workdir, phase) if r["epoch"] <= epoch]
    for record in records:
        alive &= ~np.asarray(record.get("diverged", [False] * n_seeds), bool)
    return alive


def diverged_seeds(workdir) -> dict[int, dict]:
    """{seed: {'phase', 'epoch', 'last_finite_epoch'}} for the seeds whose loss
    went non-finite: the epoch whose update was discarded, and the epoch (of
    that phase) the seed's state stayed at. From the records."""
    seeds = seed_ids(checkpointing.load_config(workdir))
    out = {}
    for phase in checkpointing.PHASES:
        for record in checkpointing.load_records(workdir, phase):
            for i, frozen in enumerate(record.get("diverged", [])):
                if frozen and seeds[i] not in out:
                    out[seeds[i]] = {"phase": phase, "epoch": record["epoch"],
                                     "last_finite_epoch": record["epoch"] - 1}
    return out


def _record(epoch: int, seconds: float, losses: dict, sizes=None, active=None, diverged=None) -> dict:
    losses = {name: np.asarray(v, np.float64) for name, v in losses.items()}  # (S, batches)
    rec = {"epoch": epoch, "seconds": seconds,
           "loss": {k: v.mean(axis=1).tolist() for k, v in losses.items()},
           "batch_loss": {k: v.tolist() for k, v in losses.items()}}
    if sizes is not None:
        rec["cluster_sizes"] = np.asarray(sizes).tolist()
    if active is not None:   # (S, k) mask -> clusters alive per seed (UNSEEN removes some)
        rec["active_clusters"] = np.asarray(active).sum(axis=-1).tolist()
    if diverged is not None:
        rec["diverged"] = [bool(d) for d in diverged]
    return rec


def _run_phase(name: str, ckpts: checkpointing.PhaseCheckpoints, state, epoch_fn, n_epochs: int,
               x, progress: bool, alive=None, snapshot_fn=None, seeds=None):
    """Run epochs state.epoch+1 .. n_epochs, saving after each. Returns the
    state and the alive mask. A seed whose loss goes non-finite keeps its
    last finite state (and snapshot, rebuilt by `snapshot_fn`) for the rest
    of the run; FloatingPointError once every seed has."""
    from tqdm.auto import tqdm

    # Epoch e+1 is dispatched (JAX runs it asynchronously) before epoch e is
    # waited for and saved, so the host work of a save (the record, orbax's
    # synchronous part) overlaps the next epoch's compute instead of leaving
    # the device idle. Nothing is donated, so the saved arrays stay valid.
    # `seconds` is the time between two epochs' results: the epoch's cost
    # in a running loop, saves included.
    start = int(np.max(to_host(state["epoch"])))   # a frozen seed's own counter stays behind
    n_seeds = jax.tree.leaves(state)[0].shape[0]
    seeds = seeds or list(range(n_seeds))
    if alive is None:
        alive = place(np.ones(n_seeds, bool), state["epoch"].sharding)
    bar = tqdm(total=n_epochs, initial=start, desc=name, disable=not progress, unit="epoch")
    last_done = time.perf_counter()

    def finish(epoch, epoch_state, out, alive_before, alive_after):
        nonlocal last_done
        out = dict(out)
        losses, was_alive, is_alive = to_host((out.pop("losses"), alive_before, alive_after))
        if not is_alive.all() and snapshot_fn is not None:   # frozen seeds keep their last snapshot
            kept = snapshot_fn(epoch_state, x)
            out = {k: jnp.where(alive_after.reshape((-1,) + (1,) * (v.ndim - 1)), v, kept[k]) for k, v in out.items()}
        for i in np.flatnonzero(was_alive & ~is_alive):
            bad = [k for k, v in losses.items() if not np.isfinite(v[i]).all()]
            log.warning("seed %d diverged in %s epoch %d (non-finite %s loss): its state stays at epoch %d, "
                        "the other seeds go on", seeds[i], ckpts.root.name, epoch, "/".join(bad), epoch - 1)
        # Seeds frozen before this epoch have no loss of their own in it.
        losses = {k: np.where(was_alive[:, None], v, np.nan) for k, v in losses.items()}
        now = time.perf_counter()
        record = _record(epoch, now - last_done, losses, to_host(out.get("cluster_sizes")), to_host(out.get("active")),
                         diverged=~is_alive)
        last_done = now
        ckpts.save(epoch, epoch_state, out, record, last=epoch == n_epochs)
        bar.update(1)
        if is_alive.any():
            bar.set_postfix(loss=f"{np.nanmean(record['loss']['total' if 'total' in losses else 'reconstruction']):.4g}")
            return
        bad = sorted({k for k, v in losses.items() if not np.isfinite(v[was_alive]).all()})
        raise FloatingPointError(f"non-finite {'/'.join(bad)} loss in {ckpts.root.name} epoch {epoch}: every seed has "
                                 "now diverged (see 'diverged' in records.jsonl); lower the learning rate or "
                                 "check the data")

    pending = None
    for epoch in range(start + 1, n_epochs + 1):
        new_state, out = epoch_fn(state, x)
        state, alive_next = _keep_finite(state, new_state, out["losses"], alive)
        if pending is not None:
            finish(*pending)
        pending = (epoch, state, out, alive, alive_next)
        alive = alive_next
    if pending is not None:
        finish(*pending)
    bar.close()
    return state, alive


def _resume(ckpts: checkpointing.PhaseCheckpoints, abstract_state, snapshot_fn, x):
    """Restore the newest intact resume point of a phase, or None. A damaged
    one is skipped for the one before, with a warning. What a killed run
    wrote after the restored point (snapshots, model states, records, damaged
    resume points) is dropped, to be replayed; a snapshot or model state of
    that epoch lost in the kill is rewritten."""
    for epoch in reversed(ckpts.resume_epochs()):
        try:
            state = ckpts.restore(epoch, abstract_state)
        except checkpointing.DamagedCheckpointError as e:
            log.warning("%s; skipped: resuming from the resume point before it", e)
            continue
        ckpts.discard_after(epoch)
        ckpts.ensure_epoch(epoch, state, lambda: snapshot_fn(state, x))
        log.info("resumed %s from epoch %d", ckpts.root.name, epoch)
        return state
    # Nothing (intact) to resume from: what a run killed before its first resume point wrote goes.
    ckpts.discard_after(-1)
    return None


def _state_shapes(trainer: Trainer, keys, x, per_seed):
    """Abstract pretraining and clustering states on the seed mesh: the
    targets orbax restores onto (with optax's state types)."""
    def sharded(shapes):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=per_seed), shapes)
    pstate = sharded(jax.eval_shape(trainer.init_pretrain, keys))
    return pstate, sharded(jax.eval_shape(trainer.init_clustering, pstate["params"], keys, x)[0])


# -- replay: any epoch's model state, rebuilt (checkpointing.load_state reaches this)

@functools.lru_cache(maxsize=1)
def _replay_setup(workdir: str, config_json: str):
    """The run's trainer and data, kept for the next replay of the same run
    (compiling is most of a short replay)."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    trainer = make_train(config, *dataset.x.shape, k)
    per_seed, replicated = seed_sharding(int(config.seeds))
    return config, trainer, place(dataset.x, replicated), per_seed


def replay_to_epoch(workdir: Path, phase: str, start_epoch: int, read_start, epoch: int) -> dict:
    """checkpointing.REPLAY_ENTRY_POINT: the model state (numpy) of `epoch`,
    trained from the resume point at `start_epoch` (`read_start(abstract
    state)` reads it; None: the initial pretraining state) through the run's
    own compiled epoch functions and divergence rule, as `train_and_evaluate`
    trained it. On the same device layout it is the same program on the same
    inputs: bit-identical (tested, loop and vmap). On another (e.g. a run
    sharded over 4 devices, replayed on 1) vmapped seeds agree to float
    round-off, as any launch with another number of seeds per device does
    (README, Reproducibility)."""
    config, trainer, x, per_seed = _replay_setup(str(workdir), (Path(workdir) / "config.json").read_text())
    keys = place(seed_keys(config), per_seed)
    if read_start is None:
        state = trainer.init_pretrain(keys)
    else:
        state = read_start(_state_shapes(trainer, keys, x, per_seed)[phase == "clustering"])
    epoch_fn = trainer.pretrain_epoch if phase == "pretrain" else trainer.cluster_epoch
    alive = place(_alive_at(Path(workdir), phase, start_epoch, int(config.seeds)), per_seed)
    for _ in range(start_epoch, epoch):
        new_state, out = epoch_fn(state, x)
        state, alive = _keep_finite(state, new_state, out["losses"], alive)
    return jax.tree.map(np.asarray, to_host(checkpointing.model_state(state)))


def _pretrained_params(config, keys, trainer, x):
    """The final pretrained autoencoder of another run, for our seeds."""
    source = Path(config.pretrained_from)
    other = checkpointing.load_config(source)
    sections = ("dataset", "model")
    changed = changed_settings({s: json.loads(other[s].to_json()) for s in sections},
                               {s: json.loads(config[s].to_json()) for s in sections})
    if changed:
        raise ValueError(f"pretrained_from={source}: its config differs from this run's ({', '.join(changed)})")
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


def summarize(config, dataset, trainer, cstate, x, workdir: Path, diverged: dict | None = None) -> dict:
    """Per-seed scores of the final epoch: the algorithm's own assignment and,
    as ClustPy reports, a k-means re-clustering of the final embedding with
    the number of clusters still active (the data set's k for a fixed-k
    method; UNSEEN's estimate, `n_clusters`, otherwise); and the label-free
    chance test of the final partitions (`dcjax.chance`). A diverged seed
    (`diverged_seeds`) is scored at the epoch it stayed at, flagged, and left
    out of the means and of the chance test."""
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
               "cluster_sizes": np.bincount(snap["assignments"][i], minlength=k).tolist(),
               "diverged": (diverged or {}).get(seed)}
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
               "diverged_seeds": sorted(diverged or {})}
    healthy = [r for r in rows if not r["diverged"]]
    summary["chance"] = chance.chance_test(
        np.asarray(snap["assignments"])[[i for i, r in enumerate(rows) if not r["diverged"]]], k)
    if dataset.y is not None and healthy:
        for label in ("algorithm", "kmeans_on_embedding"):
            summary[f"{label}_mean"] = {m: float(np.mean([r[label][m] for r in healthy])) for m in rows[0][label]}
            summary[f"{label}_std"] = {m: float(np.std([r[label][m] for r in healthy])) for m in rows[0][label]}
    if jax.process_index() == 0:
        checkpointing.write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict, workdir: Path) -> str:
    lines = [f"{summary['algorithm']} on {summary['dataset']}: checkpoints in {workdir.absolute()}"]
    for row in summary["seeds"]:
        parts = [f"seed {row['seed']:>3}", f"k {row.get('n_clusters', '?')}"]
        if row.get("diverged"):
            d = row["diverged"]
            parts.append(f"[DIVERGED in {d['phase']} epoch {d['epoch']}: stayed at epoch {d['last_finite_epoch']}]")
        for label in ("algorithm", "kmeans_on_embedding"):
            if label in row:
                s = row[label]
                parts.append(f"{label}: ACC {s['acc']:.4f} NMI {s['nmi']:.4f} ARI {s['ari']:.4f}")
        if "algorithm" not in row:   # no labels: what there is to see is the clusters' sizes
            parts.append(f"epoch {row['epoch']}: cluster sizes {row['cluster_sizes']}")
        lines.append("  ".join(parts))
    for label in ("algorithm", "kmeans_on_embedding"):
        if f"{label}_mean" in summary:
            m, s = summary[f"{label}_mean"], summary[f"{label}_std"]
            healthy = "" if not summary.get("diverged_seeds") else f", {len(summary['seeds']) - len(summary['diverged_seeds'])} seeds that did not diverge"
            lines.append(f"mean ± sd ({label}{healthy}): " + ", ".join(f"{k.upper()} {m[k]:.4f} ± {s[k]:.4f}" for k in m))
    if "chance" in summary:
        lines.append(summary["chance"]["message"])
    return "\n".join(lines)




def _close(checkpoints, failed: bool):
    """Wait for the asynchronous saves and close. After a failure, errors of
    the saves still in flight are only logged, and their temporaries removed."""
    for ckpts in checkpoints:
        try:
            ckpts.wait()
            ckpts.close()
        except Exception as e:   # noqa: BLE001 -- the first failure is what gets reported
            if not failed:
                raise
            log.debug("while closing after a failure: %s", e)
        if failed:
            ckpts.remove_unfinished()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train all seeds of `config` in `workdir`, checkpointing every epoch;
    continue where a previous (killed) run in the same workdir stopped.

    Refused before any compute: an unwritable workdir, one that another live
    run holds (dcjax.lock), checkpoints that would not fit the free space.
    A full disk mid-run ends it with DiskFullError; what is on disk stays
    complete, and the same command continues once there is room."""
    workdir = Path(workdir)
    config_lib.validate(config)   # the command line did already; a notebook's config is checked here
    if config.algorithm not in methods.REGISTRY:
        raise ValueError(f"unknown algorithm {config.algorithm!r}; known: {', '.join(sorted(methods.REGISTRY))}")
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    data.validate(dataset.x, dataset.y, methods.n_centers(config, k), int(config.batch_size), name=dataset.name)
    with workdir_lib.claim(workdir, bool(config.get("allow_foreign_workdir", False))):   # after the checks: a refused run leaves no folder
        config = _settle_seed_parallelism(config, workdir)
        _write_config(config, workdir)
        n, d = dataset.x.shape
        trainer = make_train(config, n, d, k)
        pre_ckpts = checkpointing.PhaseCheckpoints.from_settings(workdir, "pretrain", config.checkpoint)
        clu_ckpts = checkpointing.PhaseCheckpoints.from_settings(workdir, "clustering", config.checkpoint)
        try:
            cstate, alive = _train(config, workdir, trainer, dataset, pre_ckpts, clu_ckpts)
        except BaseException as e:
            _close([pre_ckpts, clu_ckpts], failed=True)
            if _is_disk_full(e):
                resume = {p: c.resume_epochs()[-1:] for p, c in (("pretrain", pre_ckpts), ("clustering", clu_ckpts))}
                restart = (f"clustering epoch {resume['clustering'][0]}" if resume["clustering"] else
                           f"pretraining epoch {resume['pretrain'][0]}" if resume["pretrain"] else "the start")
                raise checkpointing.DiskFullError(
                    f"the disk holding {workdir} is full, so the run stopped ({e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:300]}). "
                    "Every checkpoint on disk is complete: unfinished saves were removed, and records past "
                    f"the newest resume point are dropped on resume. Make room (or write less: "
                    "--config.checkpoint.embedding_dtype=float16, a larger --config.checkpoint.keep_resume_every) "
                    f"and run the same command again: it continues from {restart}.") from e
            raise
        _close([pre_ckpts, clu_ckpts], failed=False)
        per_seed, replicated = seed_sharding(int(config.seeds))
        whole = jax.jit(lambda tree: tree, out_shardings=replicated)   # every process holds every seed
        summary = summarize(config, dataset, trainer, whole(cstate), whole(place(dataset.x, replicated)),
                            workdir, diverged=diverged_seeds(workdir))
    log.info("finished; checkpoints and summary.json in %s", workdir.absolute())
    return summary


def _train(config, workdir: Path, trainer: Trainer, dataset, pre_ckpts, clu_ckpts):
    """Both phases, resumed where a killed run stopped: (clustering state, alive mask)."""
    per_seed, replicated = seed_sharding(int(config.seeds))
    x = place(dataset.x, replicated)
    keys = place(seed_keys(config), per_seed)
    seeds = seed_ids(config)

    pstate_shape, cstate_shape = _state_shapes(trainer, keys, x, per_seed)

    plans = disk_plans(config, trainer, x, (pstate_shape, cstate_shape), pre_ckpts, clu_ckpts)
    _agree(_check_disk(config, workdir, plans) if jax.process_index() == 0 else None)

    n_seeds = len(seeds)
    cstate = _resume(clu_ckpts, cstate_shape, trainer.cluster_snapshot, x)
    if cstate is None:
        if config.pretrained_from:
            ae_params = place(to_host(_pretrained_params(config, keys, trainer, x)), per_seed)
            alive = place(np.ones(n_seeds, bool), per_seed)
        else:
            pstate = _resume(pre_ckpts, pstate_shape, trainer.pretrain_snapshot, x)
            if pstate is None:
                pstate = trainer.init_pretrain(keys)
            done = int(np.max(to_host(pstate["epoch"])))
            alive = place(_alive_at(workdir, "pretrain", done, n_seeds), per_seed)
            pstate, alive = _run_phase("pretrain", pre_ckpts, pstate, trainer.pretrain_epoch,
                                       int(config.pretrain.epochs), x, config.progress, alive=alive,
                                       snapshot_fn=trainer.pretrain_snapshot, seeds=seeds)
            ae_params = pstate["params"]
        cstate, snapshot = trainer.init_clustering(ae_params, keys, x)
        clu_ckpts.save(0, cstate, snapshot, None)
    else:
        done = int(np.max(to_host(cstate["epoch"])))
        alive = place(_alive_at(workdir, "clustering", done, n_seeds), per_seed)
    return _run_phase(config.algorithm, clu_ckpts, cstate, trainer.cluster_epoch, int(config.clustering.epochs),
                      x, config.progress, alive=alive, snapshot_fn=trainer.cluster_snapshot, seeds=seeds)
