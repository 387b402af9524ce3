"""The driver of the one training loop: per-epoch checkpoints, records, resume.

`train_and_evaluate(config, workdir)` runs the compiled epoch functions of
`dcjax.trainer.make_train` from Python, writing an orbax checkpoint after
every epoch, and resumes a killed run. The pure builder lives in
`dcjax.trainer`, the seed axis over devices in `dcjax.sharding`, the
rebuilding of an epoch's state in `dcjax.replay`. The driver also refuses
early what cannot finish (an unwritable or locked workdir, too little disk),
freezes a seed whose loss goes non-finite while the others train on, and
runs under `jax.distributed` (the seed axis over every process's devices).
Its names of the builder and of the sharding are re-exported here, so
`train.make_train` and `train.seed_keys` keep working.
"""
import errno
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn.cluster import KMeans

from dcjax import checkpointing, compilation_cache, data, methods
from dcjax.epoch_writer import EpochWriter
from dcjax import workdir as workdir_lib
from dcjax import config as config_lib
from dcjax.config import ConfigError, seed_ids
from dcjax.sharding import place, seed_sharding, start_distributed, to_host  # noqa: F401 (re-exported)
from dcjax.trainer import (EPOCH_END, PRETRAIN, CLUSTERING, Trainer, keep_finite, kmeans_host,  # noqa: F401
                           make_train, resolve_seed_parallelism, seed_keys, state_shapes,
                           _clustering_optimizer)
from dcjax.replay import replay_to_epoch  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

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


def _write_config(config, workdir: Path, data_fingerprint: str | None = None):
    """Write config.json once; refuse to continue a run with another setup."""
    workdir_lib.write_config(config, workdir, write=jax.process_index() == 0, data_fingerprint=data_fingerprint)


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


def planned_disk(config, n: int, d: int, n_clusters: int) -> dict[str, dict[str, int]]:
    """`disk_plans` of a new run of `config` on n x d data with k clusters,
    without data or a workdir (abstract shapes, a throwaway folder): what
    the run's checkpoints will take, as training estimates it before it starts."""
    import tempfile
    trainer = make_train(config, n, d, n_clusters)
    per_seed, _ = seed_sharding(int(config.seeds))
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    shapes = state_shapes(trainer, seed_keys(config), x, per_seed)
    with tempfile.TemporaryDirectory() as empty:
        ckpts = [checkpointing.PhaseCheckpoints.from_settings(Path(empty), phase, config.checkpoint)
                 for phase in checkpointing.PHASES]
        try:
            return disk_plans(config, trainer, x, shapes, *ckpts)
        finally:
            for c in ckpts:
                c.close()


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
               x, progress: bool, alive=None, snapshot_fn=None, seeds=None, background: bool = True):
    """Run epochs state.epoch+1 .. n_epochs, saving after each. Returns the
    state and the alive mask. A seed whose loss goes non-finite keeps its
    last finite state (and snapshot, rebuilt by `snapshot_fn`) for the rest
    of the run; FloatingPointError once every seed has."""
    from tqdm.auto import tqdm

    # The loop only dispatches: JAX runs each epoch asynchronously, and the
    # divergence check (`keep_finite`) stays on the device. Everything that
    # needs the host -- losses, divergence flags, the record, the saves --
    # happens in the EpochWriter's thread, in epoch order, while the device
    # runs the next epochs. Nothing is donated, so the arrays handed over
    # stay valid. `seconds` in a record is the time between two epochs'
    # results as the writer fetches them: the epoch's cost in a running loop.
    start = int(np.max(to_host(state["epoch"])))   # a frozen seed's own counter stays behind
    n_seeds = jax.tree.leaves(state)[0].shape[0]
    seeds = seeds or list(range(n_seeds))
    if alive is None:
        alive = place(np.ones(n_seeds, bool), state["epoch"].sharding)
    bar = tqdm(total=n_epochs, initial=start, desc=name, disable=not progress, unit="epoch")
    last_done = time.perf_counter()

    def write(epoch, epoch_state, out, alive_before, alive_after):
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

    writer = EpochWriter(write, background=background, name=f"dcjax-writer-{ckpts.root.name}")
    try:
        for epoch in range(start + 1, n_epochs + 1):
            new_state, out = epoch_fn(state, x)
            state, alive_next = keep_finite(state, new_state, out["losses"], alive)
            writer.submit(epoch, state, out, alive, alive_next)
            alive = alive_next
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    finally:
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
    kept = [i for i, r in enumerate(rows) if not r["diverged"]]
    summary["chance"] = chance.chance_test(np.asarray(snap["assignments"])[kept], k,
                                           start=_start_of_clustering(config, workdir, kept))
    if dataset.y is not None and healthy:
        for label in ("algorithm", "kmeans_on_embedding"):
            summary[f"{label}_mean"] = {m: float(np.mean([r[label][m] for r in healthy])) for m in rows[0][label]}
            summary[f"{label}_std"] = {m: float(np.std([r[label][m] for r in healthy])) for m in rows[0][label]}
    if jax.process_index() == 0:
        checkpointing.write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _start_of_clustering(config, workdir: Path, seeds: list[int]):
    """The seeds' assignments at clustering epoch 0 (k-means on the pretrained
    embedding), for the chance test; None where there is no clustering phase
    to come apart in, or no readable snapshot of its start."""
    if int(config.clustering.epochs) == 0:
        return None
    try:
        return np.asarray(checkpointing.load_snapshot(workdir, 0, "clustering")["assignments"])[seeds]
    except (FileNotFoundError, checkpointing.DamagedCheckpointError, KeyError):
        return None


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
    compilation_cache.enable()   # a second process with the same shapes compiles (almost) nothing
    config_lib.validate(config)   # the command line did already; a notebook's config is checked here
    if config.algorithm not in methods.REGISTRY:
        raise ValueError(f"unknown algorithm {config.algorithm!r}; known: {', '.join(sorted(methods.REGISTRY))}")
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    data.validate(dataset.x, dataset.y, methods.n_centers(config, k), int(config.batch_size), name=dataset.name)
    with workdir_lib.claim(workdir, bool(config.get("allow_foreign_workdir", False))):   # after the checks: a refused run leaves no folder
        config = _settle_seed_parallelism(config, workdir)
        facts = checkpointing.run_facts(dataset.x, dataset.y, k)
        _write_config(config, workdir, data_fingerprint=facts["data_fingerprint"])
        if jax.process_index() == 0:
            checkpointing.write_run_facts(workdir, facts)
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
                            workdir, diverged=checkpointing.diverged_seeds(workdir))
    log.info("finished; checkpoints and summary.json in %s", workdir.absolute())
    return summary


def _train(config, workdir: Path, trainer: Trainer, dataset, pre_ckpts, clu_ckpts):
    """Both phases, resumed where a killed run stopped: (clustering state, alive mask)."""
    per_seed, replicated = seed_sharding(int(config.seeds))
    x = place(dataset.x, replicated)
    keys = place(seed_keys(config), per_seed)
    seeds = seed_ids(config)

    pstate_shape, cstate_shape = state_shapes(trainer, keys, x, per_seed)

    plans = disk_plans(config, trainer, x, (pstate_shape, cstate_shape), pre_ckpts, clu_ckpts)
    _agree(_check_disk(config, workdir, plans) if jax.process_index() == 0 else None)

    n_seeds = len(seeds)
    background = config.checkpoint.get("writer", "background") == "background"
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
            alive = place(checkpointing.alive_at(workdir, "pretrain", done, n_seeds), per_seed)
            pstate, alive = _run_phase("pretrain", pre_ckpts, pstate, trainer.pretrain_epoch,
                                       int(config.pretrain.epochs), x, config.progress, alive=alive,
                                       snapshot_fn=trainer.pretrain_snapshot, seeds=seeds, background=background)
            ae_params = pstate["params"]
        cstate, snapshot = trainer.init_clustering(ae_params, keys, x)
        clu_ckpts.save(0, cstate, snapshot, None)
    else:
        done = int(np.max(to_host(cstate["epoch"])))
        alive = place(checkpointing.alive_at(workdir, "clustering", done, n_seeds), per_seed)
    return _run_phase(config.algorithm, clu_ckpts, cstate, trainer.cluster_epoch, int(config.clustering.epochs),
                      x, config.progress, alive=alive, snapshot_fn=trainer.cluster_snapshot, seeds=seeds,
                      background=background)
