"""Score every candidate snapshot of a run into one table, `<workdir>/scores.csv`.

    dcjax evaluate --workdir runs/x [--all_phases] [--exact_silhouette] [--nolabels]

or, from a notebook, `evaluate.evaluate_run("runs/x")` -> pandas.DataFrame.

One row per seed x phase x epoch, every epoch that has a snapshot, of the
phase selection reads (the clustering phase; pretraining for AE+k-means), or
of both phases with `--all_phases`. The same pass, reading each snapshot
once, stores each epoch's partitions and its embedding at a fixed point
sample under `scored/` (`dcjax.run`): the rest of the reading side reads
those. Columns, in order:

* `seed`, `phase`, `epoch` (the key), `assignment_source`: 'algorithm' (the
  run's own hard assignment, clustering phase) or 'kmeans' (pretraining
  snapshots hold only the embedding, so they are clustered here by
  `kmeans`), `silhouette_points`: how many points `silhouette` averages (N
  when exact; fewer when sampled, see below).
* every key of `metrics.label_free_scores` (alphabetical) on the epoch's embedding and
  assignment, with the method's soft assignment where it has one (DEC/IDEC
  Student-t, DKM softmax; NaN otherwise). `reconstruction_mse` is NaN:
  snapshots hold no reconstruction.
* clustering phase only (NaN in pretraining): `ari_vs_previous`,
  `nmi_vs_previous`, `changed_fraction` against the previous epoch of the
  same seed (NaN at epoch 0), and `mean_pairwise_ari`, `mean_pairwise_nmi`,
  the agreement across seeds at that epoch (the same on every seed's row).
* `acc`, `nmi`, `ari` against the ground truth, only when the data set has
  labels and they are not withheld (`--nolabels`). Labels serve nothing else:
  every function above is written without a `y` argument.
* `eval_seconds`: wall time of the epoch's row block, all seeds (load, k-means,
  scores; the first epoch of a phase includes compilation). Compare with
  `seconds` in the run's records.jsonl.

The k-means of pretraining snapshots is written here in JAX (k-means++ start
from a key folded from the seed and epoch, `KMEANS_ITERATIONS` Lloyd steps,
the best of the run's `kmeans.n_init` starts): vmapped over seeds it is ~5x
faster than scikit-learn on digits and as good (equal inertia). It is not the
training's scikit-learn k-means, so the last pretraining epoch's row and
clustering epoch 0 differ a little.

The exact silhouette is O(N^2). Above `EXACT_SILHOUETTE_MAX_N` points it is
`metrics.silhouette_sampled` with `silhouette_samples` points (scored against
all N) and its standard error in `silhouette_se`; the sample is the same for
every seed and epoch, so differences between rows are not sampling noise.
`--exact_silhouette` forces the exact score.

Every score is vmapped over seeds and jitted with static shapes, so one
compiled program per phase serves all epochs. Re-running is incremental: an
epoch already in the table (key seed, phase, epoch) is not recomputed, new
epochs of a run still training or resumed are appended.

Read top to bottom: the k-means for pretraining snapshots; the jitted,
seed-vmapped column functions (label-free ones take no `y`);
`label_free_epoch`, one snapshot's label-free columns; `evaluate_run`, the
incremental driver, the only place that sees the labels; the command line.
"""
import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from absl import flags
from jax import lax

from dcjax import checkpointing, compilation_cache, data, methods, metrics
from dcjax import run as run_lib

log = logging.getLogger(__name__)

KEY = ["seed", "phase", "epoch"]
STABILITY = ["ari_vs_previous", "nmi_vs_previous", "changed_fraction"]
AGREEMENT = ["mean_pairwise_ari", "mean_pairwise_nmi"]
LABEL_BASED = ["acc", "nmi", "ari"]

EXACT_SILHOUETTE_MAX_N = 20_000
SILHOUETTE_SAMPLES = 5_000      # standard error ~0.003 for a silhouette spread of 0.2
SILHOUETTE_KEY = 0              # PRNGKey of the sample: fixed, shared by all rows
KMEANS_ITERATIONS = 100         # fixed, so the k-means is one static program
KMEANS_STREAM = 3               # folded into the seed key; train.py uses 1 and 2 for its phases
_HIGHEST = lax.Precision.HIGHEST  # no TF32 in distances on GPUs


# ------------------------------------------- k-means for pretraining snapshots

def _squared_distances(z, centers):
    d2 = (jnp.sum(z * z, axis=1, keepdims=True) - 2.0 * jnp.matmul(z, centers.T, precision=_HIGHEST)
          + jnp.sum(centers * centers, axis=1)[None, :])
    return jnp.maximum(d2, 0.0)


def _kmeans_plusplus(z, key, n_clusters: int):
    """k-means++ (Arthur & Vassilvitskii 2007): each next center drawn with
    probability proportional to the squared distance to the nearest chosen one."""
    keys = jax.random.split(key, n_clusters)
    first = z[jax.random.randint(keys[0], (), 0, z.shape[0])]
    centers = jnp.zeros((n_clusters, z.shape[1]), z.dtype).at[0].set(first)
    nearest = jnp.sum(jnp.square(z - first), axis=1)

    def add(i, carry):
        centers, nearest = carry
        # log of a floor, not of 0: all-identical points still give a valid draw
        new = z[jax.random.categorical(keys[i], jnp.log(jnp.maximum(nearest, 1e-30)))]
        return centers.at[i].set(new), jnp.minimum(nearest, jnp.sum(jnp.square(z - new), axis=1))

    return lax.fori_loop(1, n_clusters, add, (centers, nearest))[0]


def _lloyd(z, centers, iterations: int):
    """At most `iterations` Lloyd steps; an emptied cluster keeps its center.
    Returns (labels, inertia). It stops early once a step leaves the centers
    exactly as they were: a fixed point, which every further step would
    return unchanged, so the result is the fixed-count one, bit for bit
    (under vmap the loop runs until every start has stopped)."""
    k = centers.shape[0]

    def step(centers):
        members = jax.nn.one_hot(jnp.argmin(_squared_distances(z, centers), axis=1), k, dtype=z.dtype)
        counts = jnp.sum(members, axis=0)[:, None]
        means = jnp.matmul(members.T, z, precision=_HIGHEST) / jnp.maximum(counts, 1.0)
        return jnp.where(counts > 0, means, centers)

    def body(carry):
        i, centers, _ = carry
        new = step(centers)
        return i + 1, new, jnp.all(new == centers)

    _, centers, _ = lax.while_loop(lambda c: (c[0] < iterations) & ~c[2], body,
                                   (jnp.int32(0), centers, jnp.bool_(False)))
    d2 = _squared_distances(z, centers)
    return jnp.argmin(d2, axis=1).astype(jnp.int32), jnp.sum(jnp.min(d2, axis=1))


@functools.partial(jax.jit, static_argnames=("n_clusters", "n_init", "iterations"))
def kmeans(z, key, n_clusters: int, n_init: int = 1, iterations: int = KMEANS_ITERATIONS):
    """(N,) labels of the lowest-inertia of `n_init` k-means++ + Lloyd runs.
    In JAX rather than scikit-learn: vmapped over seeds it clusters every
    seed of an epoch in one call: 0.4 s against 1.9 s for scikit-learn (5 seeds x
    10 starts, N = 1,797, 2 CPU cores), with the same inertia."""
    z = z - jnp.mean(z, axis=0)  # distances by expansion: keep the numbers small
    labels, inertia = jax.vmap(lambda k: _lloyd(z, _kmeans_plusplus(z, k, n_clusters), iterations))(
        jax.random.split(key, n_init))
    return labels[jnp.argmin(inertia)]


def kmeans_key(seed: int, epoch: int):
    """Seed s, pretraining epoch e: its own stream, the same on every re-run."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), KMEANS_STREAM), epoch)


@functools.partial(jax.jit, static_argnames=("n_clusters", "n_init"))
def kmeans_seeds(z, keys, n_clusters: int, n_init: int):
    """`kmeans` of every seed at once: z (S, N, e), keys (S, 2) -> (S, N)."""
    return jax.vmap(lambda zs, ks: kmeans(zs, ks, n_clusters, n_init))(z, keys)


# ---------------------------------------------------- scores, all seeds at once

@functools.partial(jax.jit, static_argnames=("n_clusters", "sample_size"))
def label_free_columns(z, labels, probs, silhouette_key, n_clusters: int, sample_size, active=None):
    """`metrics.label_free_scores` of every seed: z (S, N, e), labels (S, N),
    probs (S, N, k) or None, active (S, k) or None (all k clusters alive) ->
    {name: (S,)}, plus `n_active_clusters`. Takes no `y`, by design: these are
    the columns label-free epoch selection may read."""
    if active is None:
        active = jnp.ones(labels.shape[:1] + (n_clusters,), bool)

    def one(z, labels, probs, active):
        scores = metrics.label_free_scores(z, labels, n_clusters, probs, key=silhouette_key,
                                           silhouette_sample_size=sample_size, active=active)
        return scores | {"n_active_clusters": jnp.sum(active).astype(jnp.float32)}
    return jax.vmap(one)(z, labels, probs, active)


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def clustering_columns(labels, previous, has_previous, n_clusters: int):
    """Stability of each seed against its previous epoch (NaN without one) and
    agreement across seeds: labels, previous (S, N) -> {name: (S,)}."""
    moved = jax.vmap(metrics.assignment_stability, in_axes=(0, 0, None))(previous, labels, n_clusters)
    moved = {name: jnp.where(has_previous, v, jnp.nan) for name, v in moved.items()}
    agree = metrics.seed_agreement(labels, n_clusters)
    return {**moved, **{name: jnp.broadcast_to(v, labels.shape[:1]) for name, v in agree.items()}}


@functools.partial(jax.jit, static_argnames=("n_clusters", "n_classes"))
def label_based_columns(y, labels, n_clusters: int, n_classes: int):
    """Ground-truth scores of every seed: y (N,), labels (S, N) -> {acc, nmi, ari: (S,)}."""
    return jax.vmap(metrics.label_based_scores, in_axes=(None, 0, None, None))(y, labels, n_clusters, n_classes)


def _label_free_names() -> list[str]:
    shapes = jax.eval_shape(functools.partial(metrics.label_free_scores, n_clusters=2),
                            jax.ShapeDtypeStruct((3, 2), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32))
    return list(shapes) + ["n_active_clusters"]


def table_columns(with_labels: bool) -> list[str]:
    return (KEY + ["assignment_source", "silhouette_points"] + _label_free_names() + STABILITY + AGREEMENT
            + (LABEL_BASED if with_labels else []) + ["eval_seconds"])


# ------------------------------------------------------------------ the driver

_quiet_orbax = run_lib.quiet_orbax   # (the name other modules used)


def _read_table(path: Path, columns: list[str], silhouette_points: int,
                n_active: int | None = None) -> pd.DataFrame | None:
    """The existing table, or None; refuse one made with other settings. A
    table written before UNSEEN lacks `n_active_clusters`: for a fixed-k run
    (`n_active`: its k) every cluster was active, so the column is filled in
    and the file rewritten."""
    if not path.exists():
        return None
    table = pd.read_csv(path)
    if [c for c in columns if c not in table.columns] == ["n_active_clusters"] and n_active is not None:
        table = table.assign(n_active_clusters=float(n_active))[columns]
        table.to_csv(path, index=False)
    if list(table.columns) != columns or (len(table) and set(table["silhouette_points"]) != {silhouette_points}):
        raise ValueError(f"{path} was computed with other settings (labels or silhouette sampling); score the "
                         f"run again with `python -m dcjax.evaluate --workdir {path.parent} --recompute` "
                         "(evaluate_run(recompute=True)), or write elsewhere with --output")
    return table


def training_seconds(workdir) -> dict[str, float]:
    """Seconds the run's epochs took, per phase, from records.jsonl."""
    return {phase: float(sum(r["seconds"] for r in checkpointing.load_records(workdir, phase)))
            for phase in checkpointing.PHASES}


class Setup(NamedTuple):
    """What scoring an epoch needs from the run, the ground truth excepted."""
    seeds: list[int]
    n_clusters: int
    kmeans_n_init: int
    soft_assign: Callable | None     # (centers, z, epoch, active) -> probs, seed-vmapped; None for hard methods
    sample_size: int | None          # of the sampled silhouette; None: exact
    silhouette_key: jax.Array


def assignments_of(setup: Setup, phase: str, epoch: int, snap: dict) -> jax.Array:
    """(S, N) partitions of a snapshot: the algorithm's own in the clustering
    phase, the k-means of the embedding in pretraining (computed once, in the
    scoring pass, and stored: `run.RunRecord.save_scored`)."""
    if phase == "pretrain":
        keys = jnp.stack([kmeans_key(s, epoch) for s in setup.seeds])
        return kmeans_seeds(jnp.asarray(snap["embedding"], jnp.float32), keys, setup.n_clusters,
                            setup.kmeans_n_init)
    return jnp.asarray(snap["assignments"])


def label_free_epoch(setup: Setup, phase: str, epoch: int, snap: dict, before,
                     assignments=None) -> tuple[jax.Array, dict]:
    """(assignments (S, N), label-free columns) of one snapshot, all seeds at
    once. `before`: the previous clustering epoch's assignments, or None;
    `assignments`: the epoch's partitions when already known."""
    z = jnp.asarray(snap["embedding"], jnp.float32)
    k = setup.n_clusters
    active, probs = None, None   # pretraining, and snapshots written before masks existed: every cluster alive
    if assignments is None:
        assignments = assignments_of(setup, phase, epoch, snap)
    if phase == "clustering":
        active = jnp.asarray(snap["active"]) if "active" in snap else None
        if setup.soft_assign is not None:  # as the epoch was trained: with the epoch-(e-1) schedule
            probs = setup.soft_assign(jnp.asarray(snap["centers"]), z, jnp.int32(max(epoch - 1, 0)),
                                      jnp.ones(snap["centers"].shape[:2], bool) if active is None else active)
    scores = label_free_columns(z, assignments, probs, setup.silhouette_key, k, setup.sample_size, active)
    if phase == "clustering":
        scores |= clustering_columns(assignments, assignments if before is None else before,
                                     before is not None, k)
    return assignments, scores


def _table_labels(output: Path) -> bool | None:
    """Whether an existing table has the label columns (None: no table)."""
    if not output.exists():
        return None
    with open(output) as f:
        return "acc" in f.readline().strip().split(",")


def evaluate_run(workdir, *, labels: bool | None = True, exact_silhouette: bool = False,
                 silhouette_samples: int = SILHOUETTE_SAMPLES, output=None, recompute: bool = False,
                 progress: bool = True, all_phases: bool = False, run=None) -> pd.DataFrame:
    """Score the epochs of `workdir` not yet in `output` (default
    `<workdir>/scores.csv`), append them, and return the whole table sorted by
    phase, epoch, seed. The phase that selection reads is scored (the
    clustering phase; pretraining for AE+k-means); `all_phases` scores both.
    `labels=False` withholds the ground truth; None: as the existing table
    (without labels when there is none). One pass reads each snapshot once:
    it also stores each epoch's partitions and its embedding at the fixed
    point sample (`run.RunRecord.save_scored`), which selection, the launch
    choice and the report read instead of the snapshots.
    `attrs['computed']` (epochs scored), `attrs['damaged']` ((phase, epoch)
    whose snapshot could not be read: left out, with a warning) and
    `attrs['seconds']` say what this call did."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    compilation_cache.enable()
    run = run or run_lib.RunRecord(workdir)
    workdir = run.workdir
    output = Path(output) if output else workdir / "scores.csv"
    config = run.config
    n = run.n_rows
    phases = checkpointing.PHASES if all_phases else (run.selection_phase,)
    if recompute:
        output.unlink(missing_ok=True)
    if labels is None:
        labels = bool(_table_labels(output))
    method = methods.get_method(config)
    setup = Setup(
        seeds=run.seeds, n_clusters=run.n_centers, kmeans_n_init=int(config.kmeans.n_init),
        soft_assign=method.soft_assign and jax.jit(jax.vmap(method.soft_assign, (0, 0, None, 0))),
        sample_size=None if exact_silhouette or n <= EXACT_SILHOUETTE_MAX_N else min(silhouette_samples, n),
        silhouette_key=jax.random.PRNGKey(SILHOUETTE_KEY))

    with_labels = bool(labels) and run.labelled
    columns = table_columns(with_labels)
    table = _read_table(output, columns, setup.sample_size or n,
                        n_active=None if methods.unseen_enabled(config) else setup.n_clusters)
    done = set() if table is None else {
        (p, e) for (p, e), rows in table.groupby(["phase", "epoch"]) if set(rows["seed"]) == set(setup.seeds)}
    todo = {p: [e for e in run.epochs(p) if (p, e) not in done] for p in phases}
    unstored = {p: sorted(set(run.epochs(p)) - set(run.scored_epochs(p))) for p in phases}
    reads = {p: sorted(set(todo[p]) | set(unstored[p])) for p in phases}
    if any(reads.values()):
        for folder in {workdir, output.parent}:
            run_lib.require_writable(folder, f"{output.name} and scored/")

    y = n_classes = None
    if with_labels and any(todo.values()):
        # The ground truth is loaded here, and reaches nothing but label_based_columns.
        y = jnp.asarray(data.load_dataset(config.dataset).y)
        n_classes = int(y.max()) + 1
    sample = run_lib.sample_rows(n)

    damaged = []    # (phase, epoch) whose snapshot is on disk but unreadable: left out, and said so
    bar = tqdm(total=sum(map(len, reads.values())), desc="evaluate", unit="epoch", disable=not progress)
    for phase in phases:
        previous = {}   # clustering epoch -> (S, N) assignments, for the stability columns
        with contextlib.closing(run.stream(phase, reads[phase])) as snapshots:
            for epoch, snap in snapshots:
                bar.update(1)
                t0 = time.perf_counter()
                if snap is None:
                    damaged.append((phase, epoch))
                    continue
                if epoch in unstored[phase]:
                    assignments = assignments_of(setup, phase, epoch, snap)
                    run.save_scored(phase, epoch, np.asarray(assignments),
                                    np.asarray(snap["embedding"], np.float32)[:, sample])
                else:
                    assignments = jnp.asarray(run.load_scored(phase, epoch)["labels"], jnp.int32)
                if phase == "clustering":
                    previous[epoch] = assignments
                if epoch not in todo[phase]:
                    continue
                before = None
                if phase == "clustering" and epoch > 0:
                    before = previous.get(epoch - 1)
                    if before is None and epoch - 1 in run.scored_epochs(phase):   # first epoch of a resumed evaluation
                        before = jnp.asarray(run.load_scored(phase, epoch - 1)["labels"], jnp.int32)
                assignments, scores = label_free_epoch(setup, phase, epoch, snap, before, assignments)
                previous.pop(epoch - 1, None)
                if y is not None:
                    scores |= label_based_columns(y, assignments, setup.n_clusters, n_classes)
                scores = {name: np.asarray(v, np.float64) for name, v in jax.device_get(scores).items()}
                rows = pd.DataFrame({"seed": setup.seeds, "phase": phase, "epoch": epoch,
                                     "assignment_source": "kmeans" if phase == "pretrain" else "algorithm",
                                     "silhouette_points": setup.sample_size or n, **scores})
                rows["eval_seconds"] = time.perf_counter() - t0
                # One append per epoch: an interrupted evaluation keeps what it finished.
                rows.reindex(columns=columns).to_csv(output, mode="a", header=not output.exists(), index=False)
    bar.close()
    if damaged:
        log.warning("left out of %s, their snapshot damaged: %s", output.name,
                    ", ".join(f"{p} epoch {e}" for p, e in damaged))

    table = pd.read_csv(output) if output.exists() else pd.DataFrame(columns=columns)
    order = table["phase"].map({p: i for i, p in enumerate(checkpointing.PHASES)})
    table = (table.assign(_order=order).sort_values(["_order", "epoch", "seed"], kind="stable").drop(columns="_order")
             .drop_duplicates(KEY, keep="last").reset_index(drop=True))
    computed = sum(len(t) for t in todo.values()) - sum(1 for p, e in damaged if e in todo[p])
    table.attrs.update(computed=computed, damaged=damaged, seconds=time.perf_counter() - t_start)
    return table


# -------------------------------------------------------------- command line

def define_flags(fv: flags.FlagValues) -> None:
    """The flags of `dcjax evaluate`, on `fv` (none is defined at import)."""
    flags.DEFINE_string("workdir", None, "The run to evaluate (what dcjax train wrote).", flag_values=fv)
    flags.DEFINE_string("output", None, "The table (default: <workdir>/scores.csv).", flag_values=fv)
    flags.DEFINE_bool("labels", True, "Add acc/nmi/ari where the data set has labels; --nolabels withholds them.",
                      flag_values=fv)
    flags.DEFINE_bool("exact_silhouette", False,
                      f"Exact O(N^2) silhouette even above N = {EXACT_SILHOUETTE_MAX_N:,} points.", flag_values=fv)
    flags.DEFINE_integer("silhouette_samples", SILHOUETTE_SAMPLES, "Points of the sampled silhouette.",
                         flag_values=fv)
    flags.DEFINE_bool("recompute", False, "Discard the existing table and score every epoch again.", flag_values=fv)
    flags.DEFINE_bool("all_phases", False, "Score both phases; by default only the phase selection reads "
                      "(clustering; pretraining for AE+k-means).", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Progress bar over epochs.", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m dcjax.evaluate"):
    """`dcjax evaluate`: `argv` without the program name (default: sys.argv[1:])."""
    from dcjax import cli
    FLAGS = cli.parse(prog, define_flags, argv, doc=__doc__, required=("workdir",))
    try:
        table = evaluate_run(FLAGS.workdir, labels=FLAGS.labels, exact_silhouette=FLAGS.exact_silhouette,
                             silhouette_samples=FLAGS.silhouette_samples, output=FLAGS.output,
                             recompute=FLAGS.recompute, progress=FLAGS.progress, all_phases=FLAGS.all_phases)
    except (ValueError, FileNotFoundError, run_lib.RunReadError) as e:   # e.g. a table scored without labels
        cli.fail(prog, e)
    trained = training_seconds(FLAGS.workdir)
    if table.attrs["damaged"]:
        print("left out, their snapshot damaged: " + ", ".join(f"{p} epoch {e}" for p, e in table.attrs["damaged"]))
    print(f"{FLAGS.output or Path(FLAGS.workdir) / 'scores.csv'}: {len(table)} rows; scored "
          f"{table.attrs['computed']} epochs in {table.attrs['seconds']:.1f} s (training: "
          + ", ".join(f"{p} {s:.1f} s" for p, s in trained.items()) + ", from records.jsonl)")
    return table


if __name__ == "__main__":
    main()
