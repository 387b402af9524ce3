"""Label-free epoch selection: which epoch of a finished run gave the best clusters?

    python -m dcjax.select --workdir runs/x --selector assessor --assessor a.joblib

Read top to bottom. Selecting never sees a label. Labels enter only to fit an
assessor on other runs (section 4) and to score selectors (section 6):

1. Inputs. `base_table(workdir)`: one row per seed x epoch of the run's
   selection phase (`selection_phase`: the clustering phase; the pretraining
   phase for AE+k-means, whose clustering phase is epoch 0 alone). Columns:
   the label-free columns of `evaluate.evaluate_run` (label columns dropped
   on reading), each loss component of records.jsonl and its within-epoch
   batch spread, and the *pooled* indices: the epoch's partition scored in
   the embeddings of many epochs (`pooled_indices`).
2. Features. `features(base)` is a pure function of that table. It reads
   only the whitelisted label-free columns, so a label column that slipped
   in changes nothing. Choice: features use the WHOLE run (centred
   Savitzky-Golay smoothing, change points of the whole curve, ranks over all
   epochs). Selection runs after training has ended, so this is allowed, and
   it is less noisy than causal filters. Only the EMA is causal.
3. Selectors. `SELECTORS[name](feats)` -> one row per seed: the epoch and a
   short `why`. Ties go to the later epoch, the one closer to what training returns.
4. The learned assessor. A scikit-learn regressor on within-seed ranks of
   the features. It predicts the within-seed ACC rank of an epoch. It is
   fitted (`train_assessor`, the one function here that takes ACC) on OTHER
   runs: leave-one-dataset-out or leave-one-algorithm-out, `cross_fit`. It is
   saved as a small joblib file, so applying it to a new run needs no labels
   at all. Its guard keeps the final epoch unless the chosen one is predicted
   clearly better ("do no harm"). `noise_dominated` flags a seed whose
   partitions change in quality at random from epoch to epoch; the flag is a
   warning, and an optional second guard keeps such a seed's final epoch.
5. `select_run`: what the command line does. It writes
   `<workdir>/selection.json`, and it adds the chosen epochs to
   `<workdir>/keep_epochs.json` for the checkpoint retention.
6. Study metrics, for evaluation only: `truth_table` reads ACC/NMI/ARI, and
   the metrics compare the selected, final and oracle-best epochs.
"""
import functools
import json
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import signal, stats

from dcjax import chance, checkpointing, data, evaluate, methods, metrics, train

log = logging.getLogger(__name__)

# Evaluation-table columns the selection may read (all label-free).
# `n_active_clusters` is constant in a fixed-k run and falls as UNSEEN's clusters die.
SCORE_COLUMNS = ["silhouette", "simplified_silhouette", "calinski_harabasz", "davies_bouldin",
                 "within_dispersion", "between_dispersion", "size_entropy", "n_empty_clusters",
                 "n_tiny_clusters", "mean_max_prob", "mean_assignment_entropy", "effective_rank",
                 "n_active_clusters"]
STABILITY, AGREEMENT = evaluate.STABILITY, evaluate.AGREEMENT
POOLED = ["pooled_silhouette", "pooled_calinski_harabasz", "pooled_davies_bouldin"]
LABEL_BASED = evaluate.LABEL_BASED
ID = ["seed", "epoch"]

POOLED_POINTS = 500   # a fixed sample of points: the silhouette is O(n^2), and it is run E x F x S times
POOLED_EVERY = 10     # reference embeddings: every 10th epoch, plus the first and the last
POOLED_KEY = 0        # seed of the point sample: the same points for every epoch and seed

SG_WINDOW, SG_ORDER = 11, 2      # Savitzky-Golay: 11 epochs, quadratic
EMA_ALPHA = 0.1
STABILITY_WINDOW = 5             # centred rolling mean for the 'most stable' selector
CHANGE_POINTS = 3                # breaks per loss curve (see `change_points`)
PLATEAU_SLOPE = 0.1              # |slope| x span / range below this: a plateau (see `curve_features`)
TREND_COLUMNS = ["silhouette", "calinski_harabasz", "davies_bouldin", "simplified_silhouette",
                 *POOLED, "mean_pairwise_ari", "ari_vs_previous", "size_entropy", "mean_max_prob"]


# ============================================================ 1. inputs (no labels)

def selection_phase(workdir) -> str:
    """The phase whose epochs are candidates. This is the clustering phase,
    except where it holds epoch 0 alone (AE+k-means). There the choice is
    which pretraining epoch to k-means."""
    try:
        with evaluate._quiet_orbax():
            clustering = checkpointing.list_epochs(workdir, "clustering")
    except FileNotFoundError:
        clustering = []
    return "clustering" if len(clustering) > 1 else "pretrain"


def run_info(workdir) -> dict:
    config = checkpointing.load_config(workdir)
    return {"run": str(workdir), "dataset": str(config.dataset.name), "algorithm": methods.algorithm_label(config),
            "phase": selection_phase(workdir)}


def scores_table(workdir, labels: bool = False, progress: bool = False) -> pd.DataFrame:
    """`evaluate.evaluate_run`, reusing the run's scores.csv whichever way it
    was written. Label columns are dropped unless `labels`. A table written
    with labels is read with labels and then stripped, so that nothing is
    scored twice."""
    try:
        table = evaluate.evaluate_run(workdir, labels=labels, progress=progress)
    except ValueError:   # scores.csv was written with the other `labels` setting
        table = evaluate.evaluate_run(workdir, labels=not labels, progress=progress)
    return table if labels else table.drop(columns=LABEL_BASED, errors="ignore")


def loss_table(workdir, phase: str) -> pd.DataFrame:
    """Per seed x epoch: `loss_<component>` (the epoch mean) and
    `loss_<component>_batch_std` (spread over the epoch's batches), from
    records.jsonl. `loss_total` is always present; where the run logs no
    'total', it is the sum of the components. Clustering epoch 0 (the
    k-means initialisation) has no record."""
    seeds = train.seed_ids(checkpointing.load_config(workdir))
    rows = []
    for record in checkpointing.load_records(workdir, phase):
        for i, seed in enumerate(seeds):
            row = {"seed": seed, "epoch": record["epoch"]}
            for name, values in record["loss"].items():
                row[f"loss_{name}"] = values[i]
                row[f"loss_{name}_batch_std"] = float(np.std(record["batch_loss"][name][i]))
            if "loss_total" not in row:
                row["loss_total"] = sum(record["loss"][name][i] for name in record["loss"])
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ID)


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def reference_indices(z_refs, labels, n_clusters: int) -> dict:
    """One epoch's partition scored in each of F reference embeddings:
    z_refs (F, S, n, e), labels (S, n) -> {name: (F, S)}. Calinski-Harabasz
    is returned in log: it is a ratio that varies by orders of magnitude
    between embeddings."""
    def one(z, lab):
        return {"pooled_silhouette": metrics.silhouette(z, lab, n_clusters),
                "pooled_calinski_harabasz": jnp.log(metrics.calinski_harabasz(z, lab, n_clusters)),
                "pooled_davies_bouldin": metrics.davies_bouldin(z, lab, n_clusters)}
    return jax.vmap(jax.vmap(one), in_axes=(0, None))(z_refs, labels)


def pooled_indices(per_ref: dict) -> dict:
    """The reference scores of `reference_indices` averaged over the F
    embeddings -> {name: (S,)}. A partition that is only good in its own
    embedding scores low here. The embedding of a deep-clustering run is
    trained to fit its own partition, so this is the more honest test.
    Calinski-Harabasz is averaged in log (a geometric mean)."""
    means = {name: np.nanmean(np.asarray(v, np.float64), axis=0) for name, v in per_ref.items()}
    return means | {"pooled_calinski_harabasz": np.exp(means["pooled_calinski_harabasz"])}


# ACE (Wang & Ye 2024, arXiv 2403.14830), as we read it: score every
# candidate partition in several embedding spaces, keep the spaces that have
# cluster structure at all (Hartigan's dip test on their pairwise distances),
# keep the largest group of spaces that rank the partitions alike (Spearman),
# weight those spaces by their centrality in the rank-agreement graph
# (PageRank) and average each partition's within-space score ranks with
# those weights. Our spaces are the reference epochs' embeddings of the seed.
ACE = ["ace_silhouette", "ace_calinski_harabasz", "ace_davies_bouldin"]
ACE_DIP_ALPHA = 0.05     # a space is admissible when the dip test rejects unimodality at this level
ACE_GROUP_RHO = 0.5      # spaces join a group at average-linkage Spearman >= this
ACE_DAMPING = 0.85       # PageRank damping
ACE_DIP_POINTS = 379     # 379 points = 71,631 distances: within diptest's p-value table (72,000)


def dip_pvalue(z: np.ndarray) -> float:
    """p-value of Hartigan's dip test on the pairwise distances of the first
    ACE_DIP_POINTS points of z (n, e): small when the distances are
    multimodal, i.e. when the space has clusters at all."""
    import diptest
    from scipy.spatial.distance import pdist
    return float(diptest.diptest(pdist(np.asarray(z[:ACE_DIP_POINTS], np.float64)))[1])


def _pagerank(weights: np.ndarray, damping: float = ACE_DAMPING, steps: int = 100) -> np.ndarray:
    """PageRank of a weighted undirected graph (power iteration)."""
    n = len(weights)
    out = weights.sum(axis=1, keepdims=True)
    transition = np.where(out > 0, weights / np.where(out > 0, out, 1), 1.0 / n)
    rank = np.full(n, 1.0 / n)
    for _ in range(steps):
        rank = (1 - damping) / n + damping * rank @ transition
    return rank / rank.sum()


def ace_aggregate(scores: np.ndarray, admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scores (E, F): E candidate partitions scored in F spaces, larger is
    better; admissible (F,) bool. Returns the ACE score of each partition (E,)
    in [0, 1] and the weight of each space (F,)."""
    from scipy.cluster import hierarchy
    e, f = scores.shape
    finite = np.isfinite(scores).all(axis=0)
    spaces = np.flatnonzero(admissible & finite)
    if len(spaces) == 0:                      # no space passes the dip test: use every finite one
        spaces = np.flatnonzero(finite)
    weights = np.zeros(f)
    if len(spaces) == 0 or e < 2:
        return np.full(e, np.nan), weights
    ranks = stats.rankdata(scores[:, spaces], axis=0) / e
    if len(spaces) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):   # a constant space: NaN, set to 0 below
            rho = np.nan_to_num(np.corrcoef(ranks.T), nan=0.0)
        tree = hierarchy.linkage((1 - rho)[np.triu_indices(len(spaces), 1)], method="average")
        groups = hierarchy.fcluster(tree, t=1 - ACE_GROUP_RHO, criterion="distance")
        largest = np.bincount(groups).argmax()
        keep = groups == largest
        graph = np.clip(rho[np.ix_(keep, keep)], 0, None)
        np.fill_diagonal(graph, 0)
        w = _pagerank(graph)
    else:
        keep, w = np.array([True]), np.array([1.0])
    weights[spaces[keep]] = w
    return ranks[:, keep] @ w, weights


def _n_clusters(config) -> int:
    # As evaluate.py: the run's number of centers: the configured k, else the
    # data set's number of classes (k is an input of every method here; the
    # labels themselves are dropped), or UNSEEN's k_init.
    return methods.n_centers(config, int(config.dataset.n_clusters) or data.load_dataset(config.dataset).n_clusters)


def snapshot_table(workdir, phase: str, *, points: int = POOLED_POINTS, every: int = POOLED_EVERY) -> pd.DataFrame:
    """Per seed x epoch, from the snapshots: the pooled indices. In the
    pretraining phase it also gives the stability vs the previous epoch and
    the cross-seed agreement, which evaluate.py leaves NaN there. They are
    computed on the same k-means partitions as the score table.

    One pass reads every snapshot and keeps a fixed sample of `points` points:
    each epoch's partition of them, and the embedding of the reference epochs.
    A second pass scores."""
    config = checkpointing.load_config(workdir)
    seeds = train.seed_ids(config)
    with evaluate._quiet_orbax():
        epochs = checkpointing.list_epochs(workdir, phase)
    refs = sorted(set(epochs[::every]) | {epochs[0], epochs[-1]})
    k = _n_clusters(config)
    sample = None
    partitions, ref_embeddings, extra = {}, [], []
    previous = None
    with checkpointing.snapshot_reader(workdir, phase) as load, evaluate._quiet_orbax():
        for epoch in epochs:
            try:
                snap = load(epoch)
            except checkpointing.DamagedCheckpointError as e:   # left out, as evaluate leaves it out
                log.warning("%s; epoch %d is not a candidate", e, epoch)
                continue
            z = jnp.asarray(snap["embedding"], jnp.float32)
            if phase == "pretrain":
                keys = jnp.stack([evaluate.kmeans_key(s, epoch) for s in seeds])
                labels = evaluate.kmeans_seeds(z, keys, k, int(config.kmeans.n_init))
                cols = evaluate.clustering_columns(labels, labels if previous is None else previous,
                                                   previous is not None, k)
                extra.append(pd.DataFrame({"seed": seeds, "epoch": epoch,
                                           **{n: np.asarray(v, np.float64) for n, v in cols.items()}}))
                previous = labels
            else:
                labels = jnp.asarray(snap["assignments"])
            if sample is None:
                n = z.shape[1]
                sample = np.sort(np.random.default_rng(POOLED_KEY).choice(n, min(points, n), replace=False))
            partitions[epoch] = labels[:, sample]
            if epoch in refs:
                ref_embeddings.append(z[:, sample])
    z_refs = jnp.stack(ref_embeddings)
    rows, per_epoch = [], []
    epochs = [e for e in epochs if e in partitions]
    for epoch in epochs:
        per_ref = jax.device_get(reference_indices(z_refs, partitions[epoch], k))
        per_epoch.append(per_ref)
        rows.append(pd.DataFrame({"seed": seeds, "epoch": epoch,
                                  **{n: np.asarray(v, np.float64) for n, v in pooled_indices(per_ref).items()}}))
    table = pd.concat(rows, ignore_index=True)
    # ACE: the same reference scores, aggregated over the admissible, concordant spaces.
    admissible = np.array([[dip_pvalue(z_refs[f, s]) < ACE_DIP_ALPHA for s in range(len(seeds))]
                           for f in range(len(z_refs))])                     # (F, S)
    for pooled_name, ace_name in zip(POOLED, ACE):
        sign = -1.0 if pooled_name == "pooled_davies_bouldin" else 1.0      # ACE ranks: larger is better
        matrix = np.stack([np.asarray(p[pooled_name], np.float64) for p in per_epoch])   # (E, F, S)
        values = np.stack([ace_aggregate(sign * matrix[:, :, s], admissible[:, s])[0]
                           for s in range(len(seeds))], axis=1)              # (E, S)
        table[ace_name] = values.reshape(-1)   # rows are epoch-major, seeds inner, as built above
    if extra:
        table = table.merge(pd.concat(extra, ignore_index=True), on=ID)
    return table


def base_table(workdir, *, scores: pd.DataFrame | None = None, phase: str | None = None,
               progress: bool = False) -> pd.DataFrame:
    """Everything label-free that the features derive from, for the run's
    selection phase (or `phase`): one row per seed x epoch. `scores` is an
    evaluation table to use instead of reading/computing the run's own. Its
    label columns, if any, are dropped here."""
    phase = phase or selection_phase(workdir)
    if scores is None:
        scores = scores_table(workdir, labels=False, progress=progress)
    scores = scores[scores.phase == phase].drop(columns=LABEL_BASED, errors="ignore")
    snaps = snapshot_table(workdir, phase)
    if phase == "pretrain":   # stability and agreement from the snapshot pass, not evaluate's NaNs
        scores = scores.drop(columns=STABILITY + AGREEMENT)
    base = scores[ID + [c for c in SCORE_COLUMNS + STABILITY + AGREEMENT if c in scores]]
    base = base.merge(snaps, on=ID, how="left").merge(loss_table(workdir, phase), on=ID, how="left")
    base.attrs.update(run_info(workdir) | {"phase": phase})
    return base.sort_values(ID, kind="stable").reset_index(drop=True)


# ============================================================ 2. features (pure, no labels)

def _odd_window(n: int, window: int = SG_WINDOW) -> int:
    w = min(window, n if n % 2 else n - 1)
    return max(w, 1)


def _filled(curve: np.ndarray) -> np.ndarray:
    """NaNs (clustering epoch 0 has no loss, stability no previous) filled
    from the nearest epoch, so filters can run; raw columns keep their NaNs."""
    s = pd.Series(curve, dtype=float)
    return s.interpolate(limit_direction="both").fillna(0.0).to_numpy()


def _savgol(curve: np.ndarray, deriv: int = 0) -> np.ndarray:
    w = _odd_window(len(curve))
    if w <= SG_ORDER:
        return np.gradient(curve) if deriv == 1 else (np.zeros_like(curve) if deriv else curve.copy())
    return signal.savgol_filter(curve, w, SG_ORDER, deriv=deriv, mode="interp")


def change_points(curve: np.ndarray, n_bkps: int = CHANGE_POINTS, min_size: int = 5) -> list[int]:
    """Epoch indices where a continuous piecewise-linear fit of the curve
    bends most: ruptures' binary segmentation with the 'clinear' cost and a
    fixed number of breaks. A penalised search (PELT) cuts a smooth decay
    into a piece every few epochs, since a curve is never piecewise linear. A
    fixed count gives comparable regimes in every run (early drop, main
    descent, tail). Returns the segment starts, without 0."""
    import ruptures

    n = len(curve)
    n_bkps = min(n_bkps, n // min_size - 1)
    if n_bkps < 1:
        return []
    curve = (curve - curve.min()) / max(float(np.ptp(curve)), 1e-12)
    ends = ruptures.Binseg(model="clinear", min_size=min_size, jump=1).fit(curve[:, None]).predict(n_bkps=n_bkps)
    return [e for e in ends if e < n]


def curve_features(name: str, curve: np.ndarray, full: bool = True) -> dict[str, np.ndarray]:
    """Shape features of one per-epoch curve (one seed, epochs in order).
    Slopes and curvature are divided by the range of the smoothed curve, so
    they are comparable across runs: slope x span / range is the fraction of
    the whole range that the curve would cross at this rate over the whole run.
    `full` adds the loss-curve extras: relative change vs the previous epoch,
    EMA, curvature, a plateau indicator, and the position relative to the
    elbow and to the change points."""
    f = _filled(curve)
    n = len(f)
    smooth = _savgol(f)
    scale = max(float(np.ptp(smooth)), 1e-12)
    slope = _savgol(f, 1) * (n - 1) / scale
    out = {f"{name}_sg": smooth, f"{name}_slope": slope}
    if not full:
        return out
    t = np.arange(n)
    previous = np.concatenate([[np.nan], f[:-1]])
    out[f"{name}_relchange"] = (f - previous) / np.where(np.abs(previous) > 0, np.abs(previous), np.nan)
    out[f"{name}_ema"] = pd.Series(f).ewm(alpha=EMA_ALPHA).mean().to_numpy()
    out[f"{name}_curvature"] = _savgol(f, 2) * (n - 1) ** 2 / scale
    out[f"{name}_plateau"] = (np.abs(slope) < PLATEAU_SLOPE).astype(float)
    # Elbow (kneedle): the point of the smoothed curve farthest from the chord
    # between its ends, both axes scaled to [0, 1].
    if n > 2 and smooth[-1] != smooth[0]:
        chord = np.abs((smooth - smooth[0]) / (smooth[-1] - smooth[0]) - t / (n - 1))
        elbow = int(np.argmax(chord))
    else:
        elbow = 0
    out[f"{name}_after_elbow"] = (t - elbow) / max(n - 1, 1)
    out[f"{name}_past_elbow"] = (t >= elbow).astype(float)
    starts = np.array([0] + change_points(f))
    last_start = starts[np.searchsorted(starts, t, side="right") - 1]
    out[f"{name}_since_change"] = (t - last_start) / max(n - 1, 1)
    out[f"{name}_after_last_change"] = (t >= starts[-1]).astype(float)
    return out


def feature_inputs(base: pd.DataFrame) -> list[str]:
    """The columns of `base` that features may read: a whitelist, so that
    acc/nmi/ari (or anything else) never get in, even when present."""
    allowed = SCORE_COLUMNS + STABILITY + AGREEMENT + POOLED + ACE
    return [c for c in base.columns if c in allowed or (c.startswith("loss_") and c not in LABEL_BASED)]


def features(base: pd.DataFrame) -> pd.DataFrame:
    """Per seed x epoch: the raw inputs, their whole-run curve features, the
    smoothed stability and the epoch's position in the run. Pure: the same
    `base` always gives the same table."""
    inputs = feature_inputs(base)
    losses = [c for c in inputs if c.startswith("loss_") and not c.endswith("_batch_std")]
    blocks = []
    for seed, run in base.sort_values(ID).groupby("seed", sort=True):
        epochs = run["epoch"].to_numpy()
        cols = {"seed": seed, "epoch": epochs,
                "epoch_fraction": (epochs - epochs[0]) / max(epochs[-1] - epochs[0], 1)}
        cols |= {c: run[c].to_numpy(float) for c in inputs}
        for c in losses:
            cols |= curve_features(c, run[c].to_numpy(float), full=True)
        for c in TREND_COLUMNS:
            if c in run:
                y = run[c].to_numpy(float)
                cols |= curve_features(c, np.log(y) if c == "calinski_harabasz" else y, full=False)
        if "ari_vs_previous" in run:
            cols["ari_vs_previous_smooth"] = (run["ari_vs_previous"].rolling(
                STABILITY_WINDOW, center=True, min_periods=1).mean().to_numpy())
        blocks.append(pd.DataFrame(cols))
    feats = pd.concat(blocks, ignore_index=True)
    feats.attrs.update(base.attrs)
    return feats


def feature_names(feats: pd.DataFrame) -> list[str]:
    """The assessor's inputs. ACE columns are left out: they are a baseline
    selector, added after the first study runs, so older score tables lack them."""
    return [c for c in feats.columns if c not in ID and c not in ACE]


def run_features(workdir, **kw) -> pd.DataFrame:
    return features(base_table(workdir, **kw))


# ============================================================ 3. selectors (no labels)

def _pick(feats: pd.DataFrame, column: str, mode: str, label: str | None = None) -> pd.DataFrame:
    """Per seed, the epoch where `column` is best (max or min; NaN never
    wins). Ties go to the later epoch."""
    rows = []
    for seed, run in feats.groupby("seed", sort=True):
        v = run[column].to_numpy(float) * (1 if mode == "max" else -1)
        epochs = run["epoch"].to_numpy()
        if np.all(np.isnan(v)):
            epoch, why = int(epochs.max()), f"{column} undefined at every epoch: final epoch"
        else:
            best = np.nanmax(v)
            epoch = int(epochs[np.flatnonzero(v >= best - 1e-12 * abs(best))].max())
            value = float(run.loc[run.epoch == epoch, column].iloc[0])
            final = float(run.loc[run.epoch == epochs.max(), column].iloc[0])
            lo, hi = np.nanmin(run[column]), np.nanmax(run[column])
            why = (f"{mode} {label or column} = {value:.4g} at epoch {epoch} "
                   f"(final epoch {int(epochs.max())}: {final:.4g}; range {lo:.4g} to {hi:.4g})")
        rows.append({"seed": seed, "epoch": epoch, "why": why})
    return pd.DataFrame(rows)


def select_last(feats):
    """What training returns: the baseline every selector must beat."""
    return pd.DataFrame([{"seed": s, "epoch": int(r.epoch.max()), "why": "final epoch"}
                         for s, r in feats.groupby("seed", sort=True)])


def _by_column(column: str, mode: str, doc: str) -> Callable:
    def selector(feats):
        return _pick(feats, column, mode)
    selector.__doc__ = doc
    selector.__name__ = f"select_{mode}_{column}"
    selector.column = column
    return selector


def available_selectors(feats: pd.DataFrame) -> list[str]:
    """The fixed selectors whose input column this run has (ACE columns are
    missing from score tables written before ACE was added)."""
    return [name for name, fn in SELECTORS.items() if getattr(fn, "column", None) in (None, *feats.columns)]


# The guard of `max_agreement_guarded`, in mean pairwise ARI. Fixed before the
# pendigits runs and digits seeds 5-9 were trained (the study's out-of-sample
# check); not tuned.
AGREEMENT_GUARD = 0.02


def select_max_agreement_guarded(feats):
    """The epoch of highest cross-seed agreement, but only when its mean
    pairwise ARI beats the final epoch's by more than AGREEMENT_GUARD; else the
    final epoch ("do no harm" where agreement barely moves)."""
    chosen = _pick(feats, "mean_pairwise_ari", "max").set_index("seed")
    rows = []
    for seed, run in feats.groupby("seed", sort=True):
        final = int(run.epoch.max())
        epoch, why = int(chosen.at[seed, "epoch"]), chosen.at[seed, "why"]
        at = run.set_index("epoch")["mean_pairwise_ari"]
        if not np.isfinite(at.get(epoch, np.nan)) or not at.get(epoch) - at.get(final, np.nan) > AGREEMENT_GUARD:
            why = f"{why}; not above the final epoch's by > {AGREEMENT_GUARD}: final epoch kept"
            epoch = final
        rows.append({"seed": seed, "epoch": epoch, "why": why})
    return pd.DataFrame(rows)


SELECTORS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "last": select_last,
    "min_loss": _by_column("loss_total", "min", "Lowest training loss (epoch mean of the total loss)."),
    "max_silhouette": _by_column("silhouette", "max", "Silhouette of the partition in its own embedding."),
    "max_calinski_harabasz": _by_column("calinski_harabasz", "max", "Calinski-Harabasz, own embedding."),
    "min_davies_bouldin": _by_column("davies_bouldin", "min", "Davies-Bouldin, own embedding."),
    "pooled_silhouette": _by_column("pooled_silhouette", "max", "Silhouette averaged over reference embeddings."),
    "pooled_calinski_harabasz": _by_column("pooled_calinski_harabasz", "max",
                                           "Calinski-Harabasz, geometric mean over reference embeddings."),
    "pooled_davies_bouldin": _by_column("pooled_davies_bouldin", "min",
                                        "Davies-Bouldin averaged over reference embeddings."),
    "most_stable": _by_column("ari_vs_previous_smooth", "max",
                              f"ARI vs the previous epoch, centred {STABILITY_WINDOW}-epoch mean."),
    "max_agreement": _by_column("mean_pairwise_ari", "max",
                                "Mean pairwise ARI across seeds: the same epoch for every seed."),
    "max_agreement_guarded": select_max_agreement_guarded,
    "ace_silhouette": _by_column("ace_silhouette", "max",
                                 "ACE: silhouette ranks over the admissible, concordant reference embeddings."),
    "ace_calinski_harabasz": _by_column("ace_calinski_harabasz", "max", "ACE with Calinski-Harabasz."),
    "ace_davies_bouldin": _by_column("ace_davies_bouldin", "max",
                                     "ACE with Davies-Bouldin (ranks of -DB: larger is better)."),
}


# ============================================================ 4. the learned assessor (labels only to fit it)

ASSESSOR_KINDS = ("gbr", "ridge")


def rank_features(feats: pd.DataFrame, names: list[str]) -> np.ndarray:
    """(rows, features): each feature's percentile rank among the epochs of its
    seed. The ranks put runs of any data set, scale and algorithm on one
    footing. A feature that is missing or undefined gets 0.5, the neutral rank."""
    ranked = feats.reindex(columns=["seed"] + names).groupby("seed")[names].rank(pct=True)
    return ranked.fillna(0.5).to_numpy(np.float64)


def within_seed_rank(values: pd.Series, seeds: pd.Series) -> np.ndarray:
    """The assessor's target: percentile rank of `values` among the epochs of the same seed."""
    return pd.Series(values.to_numpy()).groupby(seeds.to_numpy()).rank(pct=True).to_numpy()


def _model(kind: str, seed: int = 0):
    """`seed`: the gradient-boosting model's random_state (it subsamples rows);
    0 everywhere in the study, other values only to measure what it changes."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    if kind == "gbr":
        return GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05,
                                         subsample=0.8, random_state=seed)
    if kind == "ridge":
        return Ridge(alpha=10.0)
    raise ValueError(f"assessor kind must be one of {ASSESSOR_KINDS}, got {kind!r}")


ASSESSOR_TARGETS = ("rank", "gap", "pairwise")   # 'pairwise': `PairwiseRanker` (any kind), issue 20
# The ensemble assessor: one model per target, their predictions turned into
# within-seed ranks and averaged. The rank model orders the epochs of flat runs
# (where the gap target is ~0 everywhere), the gap model weighs the runs whose
# best epoch is far better than the final one. Its guard reads the gap model,
# whose predictions are in ACC units. Added after the study of 105 (run, seed)
# pairs (selection.md, 2026-11-23) showed each model meeting the targets the
# other missed; fixed before USPS seeds 5-9 were scored.
ENSEMBLE_TARGETS = ("rank", "gap")


def assessor_target(acc: pd.Series, seeds: pd.Series, target: str) -> np.ndarray:
    """What the assessor learns to predict for each epoch of a seed:
    - 'rank': the within-seed percentile rank of ACC. Easy and hard data sets
      weigh the same, but so do runs whose ACC barely moves, whose ranks are noise.
    - 'gap': ACC minus the seed's best ACC (0 at the best epoch, negative
      elsewhere). Runs with a large best-vs-final gap dominate the fit; flat
      runs contribute near-zero targets."""
    if target == "rank":
        return within_seed_rank(acc, seeds)
    if target == "gap":
        values = pd.Series(acc.to_numpy(np.float64))
        return (values - values.groupby(seeds.to_numpy()).transform("max")).to_numpy()
    raise ValueError(f"assessor target must be one of {ASSESSOR_TARGETS}, got {target!r}")


class PairwiseRanker:
    """A pairwise ranking objective in place of rank regression (RankNet with a
    linear score, Burges et al. 2005): logistic regression on x_i - x_j of
    two epochs of one seed, labelled ACC_i > ACC_j, weighted by |ACC_i -
    ACC_j| so that the pairs whose order costs most ACC count most. The score
    of an epoch is w . x. Pairs are drawn at random, PAIRS_PER_ROW per epoch
    (all pairs of a 151-epoch seed would be 11,325); near-ties are left out."""
    PAIRS_PER_ROW = 10
    MIN_GAP = 1e-3   # ACC: a tenth of a point

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> "PairwiseRanker":
        from sklearn.linear_model import LogisticRegression
        rng = np.random.default_rng(self.seed)
        first, second = [], []
        for rows in pd.Series(np.arange(len(y))).groupby(groups).indices.values():
            i = np.repeat(rows, self.PAIRS_PER_ROW)
            first.append(i)
            second.append(rng.choice(rows, len(i)))
        i, j = np.concatenate(first), np.concatenate(second)
        gap = y[i] - y[j]
        keep = np.abs(gap) > self.MIN_GAP
        d, gap = x[i[keep]] - x[j[keep]], gap[keep]
        # both orders of every pair: balanced classes, so the score needs no intercept
        model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(
            np.concatenate([d, -d]), np.concatenate([gap > 0, gap < 0]), sample_weight=np.abs(np.concatenate([gap, gap])))
        self.coef_ = model.coef_.ravel()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_


def train_assessor(training: list[tuple[pd.DataFrame, pd.DataFrame]], kind: str = "gbr",
                   names: list[str] | None = None, target: str = "rank", seed: int = 0) -> dict:
    """Fit on (features of a run, its truth table: seed, epoch, acc) pairs
    from OTHER runs, to predict `assessor_target` from the features' within-seed
    ranks. Returns the assessor: a plain dict (model, feature names, kind,
    target, what it was trained on) that `save_assessor` writes.
    target='ensemble' fits one model per target of `ENSEMBLE_TARGETS` (see
    `assessor_predict`)."""
    training = sorted(training, key=lambda pair: str(pair[0].attrs.get("run", "")))  # order-free fit
    if names is None:   # the features every training run has (loss components differ by algorithm)
        names = sorted(set.intersection(*(set(feature_names(f)) for f, _ in training)))
    trained_on = [f.attrs.get("run", "?") for f, _ in training]
    if target == "ensemble":
        return ensemble_of({t: train_assessor(training, kind, names, t, seed) for t in ENSEMBLE_TARGETS})
    x, y, groups = [], [], []
    for run, (feats, truth) in enumerate(training):
        acc = feats[ID].merge(truth[ID + ["acc"]], on=ID, how="left").acc
        x.append(rank_features(feats, names))
        y.append(acc.to_numpy(np.float64) if target == "pairwise" else assessor_target(acc, feats["seed"], target))
        groups.append(run * 100_000 + feats["seed"].to_numpy())
    x, y, groups = np.concatenate(x), np.concatenate(y), np.concatenate(groups)
    model = (PairwiseRanker(seed).fit(x, y, groups) if target == "pairwise" else _model(kind, seed).fit(x, y))
    return {"model": model, "features": names, "kind": kind, "target": target,
            "trained_on": trained_on, "rows": int(len(y))}


def ensemble_of(members: dict[str, dict]) -> dict:
    """The ensemble assessor of already fitted members {target: assessor},
    all fitted on the same runs and features."""
    first = members[ENSEMBLE_TARGETS[0]]
    return {"members": members, "features": first["features"], "kind": first["kind"], "target": "ensemble",
            "trained_on": first["trained_on"], "rows": first["rows"]}


def save_assessor(assessor: dict, path) -> Path:
    import joblib
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(assessor, path, compress=3)
    return path


def load_assessor(path=None) -> dict:
    """An assessor file: `.npz` (arrays, `dcjax.shipped_assessor`; any
    scikit-learn version) or a joblib pickle. None: the study's primary, shipped."""
    from dcjax import shipped_assessor
    if path is None or str(path).endswith(".npz"):
        return shipped_assessor.load(path or shipped_assessor.SHIPPED)
    import joblib
    return joblib.load(path)


def assessor_predict(assessor: dict, feats: pd.DataFrame) -> np.ndarray:
    """Predicted quality per row of `feats`. An ensemble predicts the mean of
    its members' within-seed percentile ranks (0..1, higher is better)."""
    if "members" in assessor:
        seeds = feats["seed"].reset_index(drop=True)
        return np.mean([within_seed_rank(pd.Series(assessor_predict(m, feats)), seeds)
                        for m in assessor["members"].values()], axis=0)
    return assessor["model"].predict(rank_features(feats, assessor["features"]))


def guard_scores(assessor: dict, feats: pd.DataFrame, predicted: np.ndarray) -> np.ndarray:
    """What the guard compares between the chosen and the final epoch: the
    assessor's own prediction `predicted`, or an ensemble's gap model (ACC units)."""
    return assessor_predict(assessor["members"]["gap"], feats) if "members" in assessor else predicted


def explain(assessor: dict, feats: pd.DataFrame, row: int, top: int = 3) -> list[dict]:
    """Why the assessor liked row `row`: each feature in turn is set to the
    neutral rank 0.5, and the features whose removal costs the most predicted
    quality are returned. An ensemble explains each member ('model': its target)."""
    if "members" in assessor:
        return [{**t, "model": target} for target, m in assessor["members"].items()
                for t in explain(m, feats, row, top)]
    x = rank_features(feats, assessor["features"])
    base = x[row:row + 1]
    occluded = np.repeat(base, len(assessor["features"]), axis=0)
    np.fill_diagonal(occluded, 0.5)
    drop = assessor["model"].predict(base)[0] - assessor["model"].predict(occluded)
    def value(name):   # the raw value, for the record; None where absent or undefined (JSON has no NaN)
        v = float(feats[name].iloc[row]) if name in feats else np.nan
        return None if np.isnan(v) else v
    return [{"feature": assessor["features"][j], "rank": round(float(base[0, j]), 3),
             "value": value(assessor["features"][j]), "contribution": round(float(drop[j]), 4)}
            for j in np.argsort(-drop)[:top]]


# A guarded assessor leaves the final epoch only when it predicts an epoch
# clearly better: by 0.15 within-seed ACC rank (0..1), or by half an ACC point
# (the do-no-harm tolerance) for the 'gap' target. Fixed once, when the guard
# was written after the digits-only preliminary study; not tuned since. The
# ensemble's guard reads its gap model, so it takes the gap margin.
GUARD_MARGINS = {"rank": 0.15, "gap": 0.005}
GUARD_MARGINS["ensemble"] = GUARD_MARGINS["gap"]
GUARD_MARGIN = GUARD_MARGINS["rank"]


def guard_margin(assessor: dict) -> float:
    return GUARD_MARGINS.get(assessor.get("target"), GUARD_MARGINS["rank"])   # older files: rank


# Noise-dominated runs. Where the partition lands in a different local optimum
# at almost every epoch (k-means on the Pendigits AE embedding), ACC jumps from
# one epoch to the next and the best epoch is the luckiest of many noisy
# draws, so a selector that leaves the final epoch there gambles. The detector reads the pooled
# silhouette: the epoch's partition scored in FIXED reference embeddings, so it
# moves only when the partition does. Its lag-1 autocorrelation over the
# epochs says whether consecutive partitions are alike. Chosen on the study's
# 150 (run, seed) pairs of 2026-11-24: it was <= 0.40 in all 7 Pendigits
# AE+k-means seeds (whose ACC lag-1 autocorrelation is 0.03-0.55) and >= 0.83 in
# the other 143; 0.6 lies in that gap. Fixed before Pendigits seeds 7-9,
# Optdigits seeds 3-9 and MNIST were scored (their out-of-sample check: one
# false alarm in 55 pairs, and keeping the final epoch of flagged seeds cost
# regret, so the noise guard is off by default; selection.md).
NOISE_COLUMN = "pooled_silhouette"
NOISE_AUTOCORR = 0.6


def lag1_autocorr(values) -> float:
    """Correlation of a series with itself one step later (NaNs dropped);
    NaN for fewer than 3 values or a constant series."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 3 or v[:-1].std() == 0 or v[1:].std() == 0:
        return np.nan
    return float(np.corrcoef(v[:-1], v[1:])[0, 1])


def noise_dominated(feats: pd.DataFrame) -> pd.DataFrame:
    """Per seed: the lag-1 autocorrelation of `NOISE_COLUMN` over the epochs,
    and `noisy`: whether it is below NOISE_AUTOCORR. A seed without the column
    (or with a constant one) is never flagged. Label-free."""
    rows = []
    for seed, run in feats.sort_values(ID).groupby("seed", sort=True):
        r = lag1_autocorr(run[NOISE_COLUMN]) if NOISE_COLUMN in run else np.nan
        rows.append({"seed": seed, "autocorr": r, "noisy": bool(np.isfinite(r) and r < NOISE_AUTOCORR)})
    return pd.DataFrame(rows, columns=["seed", "autocorr", "noisy"])


def assessor_selector(assessor: dict, guard: float = 0.0,
                      noise_guard: bool = False) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The selector of a trained assessor: per seed, the epoch with the highest
    predicted ACC rank; `why` names the features that decided. With `guard` > 0
    it keeps the final epoch unless the best epoch's prediction beats the
    final epoch's by more than `guard` ("do no harm"); an ensemble's guard
    reads its gap model (`guard_scores`). With `noise_guard` it also keeps the
    final epoch of a seed that `noise_dominated` flags, and says so."""
    def select(feats):
        feats = feats.reset_index(drop=True)
        predicted = assessor_predict(assessor, feats)
        checked = guard_scores(assessor, feats, predicted) if guard > 0 else predicted
        noise = noise_dominated(feats).set_index("seed") if noise_guard else None
        rows = []
        for seed, idx in feats.groupby("seed", sort=True).indices.items():
            if noise is not None and noise.at[seed, "noisy"]:
                final = int(feats.epoch.iloc[idx].max())
                rows.append({"seed": seed, "epoch": final, "top_features": [],
                             "why": f"noise-dominated run: lag-1 autocorrelation of the {NOISE_COLUMN} over "
                                    f"epochs {noise.at[seed, 'autocorr']:.2f} < {NOISE_AUTOCORR} (the partition "
                                    "changes in quality from epoch to epoch at random), so no epoch can be told "
                                    "apart without labels: the final epoch is kept"})
                continue
            best = predicted[idx].max()
            final_row = int(idx[np.argmax(feats.epoch.iloc[idx].to_numpy())])
            row = int(max(idx[predicted[idx] >= best - 1e-12], key=lambda i: feats.epoch.iloc[i]))
            at_final, best_epoch, final_epoch = predicted[final_row], int(feats.epoch.iloc[row]), \
                int(feats.epoch.iloc[final_row])
            gain = checked[row] - checked[final_row]   # what the guard reads (an ensemble's gap model)
            guarded = guard > 0 and gain <= guard
            if guarded:
                row = final_row
            top = explain(assessor, feats, row)
            why = (f"assessor ({assessor['kind']}, target {assessor.get('target', 'rank')}) predicts "
                   f"{best:.3f} at epoch {best_epoch}, its best (at the final epoch: {at_final:.3f})"
                   + (f"; the predicted gain over the final epoch, {gain:+.4f}, is within the guard {guard:.4f}, "
                      "so the final epoch is kept" if guarded and best_epoch != final_epoch else "")
                   + "; top features: "
                   + ", ".join(f"{t['feature']} (rank {t['rank']:.2f}, {t['contribution']:+.3f}"
                             + (f", {t['model']} model" if "model" in t else "") + ")" for t in top))
            rows.append({"seed": seed, "epoch": int(feats.epoch.iloc[row]), "why": why, "top_features": top})
        return pd.DataFrame(rows)
    return select


# Collapse from the k-means start (DKM with alpha = 1000: nearly hard
# assignments). In its first epochs some clusters absorb others, the cluster
# sizes become uneven, and ACC falls below the k-means initialisation it
# started from; within a run no label-free score follows that fall, but
# between seeds the fall of the normalised size entropy does (Spearman +0.64
# over 46 DKM seeds, experiments/dkm_size_entropy.py). The rule: where the
# chosen epoch's size entropy is more than COLLAPSE_ENTROPY_DROP below
# clustering epoch 0's, take epoch 0. Pre-registered on 2026-11-28 from the
# 184 clustering-phase seeds of the committed score tables (46 per algorithm),
# before digits, Optdigits and Pendigits seeds 10+ were scored: applied to the
# final epoch it gains +1.66 ACC points per DKM seed there (+1.55 to +1.80 for
# drops of 0.03 to 0.075: 0.05 is the middle of that plateau, not an optimum),
# harms 3 of 46 DKM seeds by more than half a point, and fires on none of the
# 138 DEC, IDEC and DCN seeds. It reads no label and no algorithm name.
COLLAPSE_ENTROPY_DROP = 0.05


def collapse_guard(feats: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """`chosen` (seed, epoch, why) with the collapse rule applied: a seed whose
    chosen epoch's clusters are much less even than at its k-means start
    (clustering epoch 0) gets epoch 0. Pretraining-phase runs are returned as
    they are: they have no k-means start among their candidates."""
    if feats.attrs.get("phase", "clustering") != "clustering" or "size_entropy" not in feats:
        return chosen
    entropy = feats.set_index(ID)["size_entropy"]
    rows = []
    for row in chosen.to_dict("records"):
        start = entropy.get((row["seed"], 0), np.nan)
        at = entropy.get((row["seed"], int(row["epoch"])), np.nan)
        if np.isfinite(start) and np.isfinite(at) and at < start - COLLAPSE_ENTROPY_DROP:
            row = row | {"epoch": 0, "why": f"{row['why']}; but its normalised size entropy {at:.3f} is "
                         f"{start - at:.3f} below the k-means start's {start:.3f} (> {COLLAPSE_ENTROPY_DROP}): "
                         "the clusters collapsed from the start, so clustering epoch 0 is taken"}
        rows.append(row)
    return pd.DataFrame(rows, columns=chosen.columns)


# The selectors that need a trained assessor: free; with the margin guard (the
# study's primary); with the margin guard and the noise guard; with the margin
# guard and the collapse guard.
ASSESSOR_SELECTORS = ("assessor", "assessor_guarded", "assessor_noise_guarded", "assessor_collapse_guarded")

# What `python -m dcjax.select`, the report and the estimators use unless told
# otherwise. 'default' is the study's primary (`assessor_guarded`) on the
# algorithms the shipped assessor learned from, and the final epoch on any
# other: a model is not trusted outside what it was trained on. Measured on
# the algorithms it never saw (selection_unseen.md, selection.md): on 45
# UNSEEN seeds the guarded assessor lost 0.59 ACC points to the final epoch
# (do-no-harm 87%); on 20 DECCS seeds it gained 0.02. Fixed before the
# UNSEEN seeds 5-9 of Pendigits, USPS and Optdigits were scored.
DEFAULT_SELECTOR = "default"
IN_DOMAIN_SELECTOR, OUT_OF_DOMAIN_SELECTOR = "assessor_guarded", "last"


def trained_algorithms(assessor: dict) -> set[str]:
    """The algorithms whose runs trained `assessor`: the last part of each
    run folder it names (runs/protocol/<data set>/<algorithm>)."""
    return {Path(run).name for run in assessor.get("trained_on", [])}


@functools.lru_cache(maxsize=1)
def _shipped_algorithms() -> frozenset[str]:
    """`trained_algorithms` of the shipped assessor, read once per process
    (the launch study resolves the default for every launch)."""
    return frozenset(trained_algorithms(load_assessor()))


def resolve_default(algorithm: str, assessor_path=None) -> tuple[str, str | None]:
    """The selector 'default' stands for on a run of `algorithm`, and why when
    that is not the assessor. An assessor file of the user's own is used as
    asked: they know what it learned from."""
    if assessor_path is not None:
        return IN_DOMAIN_SELECTOR, None
    seen = _shipped_algorithms()
    if not seen or algorithm in seen:
        return IN_DOMAIN_SELECTOR, None
    return OUT_OF_DOMAIN_SELECTOR, (
        f"the final epoch: the shipped assessor learned from {', '.join(sorted(seen))} runs only, not {algorithm}, "
        "and on the algorithms it never saw it did not beat the final epoch (measured in the dcjax repository: "
        "experiments/results/selection_unseen.md); --selector assessor_guarded uses it anyway")


def select(feats: pd.DataFrame, selector: str, assessor: dict | None = None) -> pd.DataFrame:
    """Per seed, the chosen epoch and why, by name ('assessor' needs `assessor`)."""
    if selector in ASSESSOR_SELECTORS:
        if assessor is None:
            raise ValueError(f"the {selector!r} selector needs a trained assessor (--assessor PATH)")
        guard = guard_margin(assessor) if selector != "assessor" else 0.0
        chosen = assessor_selector(assessor, guard, noise_guard=selector == "assessor_noise_guarded")(feats)
        return collapse_guard(feats, chosen) if selector == "assessor_collapse_guarded" else chosen
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose from {[*ASSESSOR_SELECTORS, *SELECTORS]}")
    return SELECTORS[selector](feats)


def cross_fit(runs: list[tuple[pd.DataFrame, pd.DataFrame]], group: str, kind: str = "gbr",
              guard: float = 0.0, scores: dict | None = None, target: str = "rank",
              noise_guard: bool = False, cache: dict | None = None,
              train_on=None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Leave-one-group-out selections over (features, truth) pairs: for every value g of `group`
    ('dataset' or 'algorithm', read from each run's attrs), an assessor is
    trained on the runs whose group is not g and selects on the runs whose
    group is g. Returns {run: selection}. Groups with no other group to train
    on are skipped, so LODO yields nothing until a second data set exists.
    `guard`: a margin, or True for the target's own (`GUARD_MARGINS`).
    If `scores` is a dict, it receives {run: the assessor's per-row prediction}.
    `noise_guard`: see `assessor_selector`. `cache`: a dict kept by the caller
    across calls on the same `runs`, so that an assessor (or an ensemble's
    member) fitted once for (group, held-out value, kind, target) is reused.
    `train_on`: a set of run names; only those may train an assessor (every run
    is still judged): how much the selections depend on the training runs.
    `seed`: the models' random_state (see `_model`)."""
    if train_on is not None and cache is not None:
        raise ValueError("cross_fit: a cache is keyed by held-out group only; pass no cache with train_on")
    out = {}
    values = sorted({f.attrs[group] for f, _ in runs})
    for held_out in values:
        training = [(f, acc) for f, acc in runs if f.attrs[group] != held_out
                    and (train_on is None or f.attrs["run"] in train_on)]
        if not training:
            continue
        def fitted(t):
            key = (group, held_out, kind, t, seed)
            if cache is None:
                return train_assessor(training, kind, target=t, seed=seed)
            if key not in cache:
                cache[key] = train_assessor(training, kind, target=t, seed=seed)
            return cache[key]
        assessor = (ensemble_of({t: fitted(t) for t in ENSEMBLE_TARGETS}) if target == "ensemble"
                    else fitted(target))
        chooser = assessor_selector(assessor, guard_margin(assessor) if guard is True else guard, noise_guard)
        for f, _ in runs:
            if f.attrs[group] == held_out:
                out[f.attrs["run"]] = chooser(f)
                if scores is not None:
                    scores[f.attrs["run"]] = assessor_predict(assessor, f.reset_index(drop=True))
    return out


# ============================================================ 5. the command line's work

def select_run(workdir, selector: str = DEFAULT_SELECTOR, assessor_path=None, progress: bool = False,
               feats: pd.DataFrame | None = None) -> dict:
    """Choose an epoch per seed without labels, write `<workdir>/selection.json`,
    and add the chosen epochs to `<workdir>/keep_epochs.json` ({phase: [epochs]},
    the union over calls) so that retention of per-epoch states can spare them.
    Snapshots are never pruned, so every chosen epoch's clustering (assignments,
    centers, embedding) stays readable; its model state is stored or replayed
    (`checkpointing.load_state`). A seed that diverged is never given an
    epoch after it (those are copies of its last finite one), and epochs
    whose snapshot is damaged are no candidates (`damaged_epochs`).
    The assessor selectors use `assessor_path`, by default the shipped one;
    'default' is the guarded assessor or the final epoch (`resolve_default`).
    `feats`: the run's `run_features`, when the caller has computed them."""
    workdir = Path(workdir)
    feats = run_features(workdir, progress=progress) if feats is None else feats
    requested, because = selector, None
    if selector == DEFAULT_SELECTOR:
        selector, because = resolve_default(feats.attrs["algorithm"], assessor_path)
    assessor = load_assessor(assessor_path) if selector in ASSESSOR_SELECTORS else None
    phase = feats.attrs["phase"]
    chosen = select(feats, selector, assessor)
    noise = noise_dominated(feats).set_index("seed")   # a warning for any selector, label-free
    with evaluate._quiet_orbax():
        states = set(checkpointing.list_epochs(workdir, phase, kind="state"))
        damaged = sorted(set(checkpointing.list_epochs(workdir, phase)) - set(feats.epoch))
    diverged = train.diverged_seeds(workdir)
    seeds = []
    for row in chosen.to_dict("records"):
        epoch, why = int(row["epoch"]), row["why"]
        frozen = diverged.get(int(row["seed"]))
        if frozen:   # its epochs from the divergence on are copies of the last finite one
            last = frozen["last_finite_epoch"] if frozen["phase"] == phase else 0 if phase == "clustering" else epoch
            if epoch > last:
                epoch, why = last, f"diverged in {frozen['phase']} epoch {frozen['epoch']}: its last finite epoch, " \
                                   f"instead of epoch {epoch} ({why})"
        autocorr = float(noise.at[row["seed"], "autocorr"])
        seeds.append({"seed": int(row["seed"]), "phase": phase, "epoch": epoch,
                      "final_epoch": int(feats.epoch.max()), "why": why, "diverged": frozen,
                      "noise_dominated": bool(noise.at[row["seed"], "noisy"]),
                      "noise_autocorr": round(autocorr, 4) if np.isfinite(autocorr) else None,   # JSON has no NaN
                      "top_features": row.get("top_features") if isinstance(row.get("top_features"), list) else [],
                      "snapshot": str(checkpointing.epoch_dir(workdir, epoch, phase, "snapshots")),
                      "state_present": epoch in states,
                      "state": str(checkpointing.epoch_dir(workdir, epoch, phase, "state")) if epoch in states else None})
    result = {"workdir": str(workdir), "phase": phase, "selector": selector, "requested_selector": requested,
              "default_because": because,   # why 'default' is not the assessor on this run
              "assessor": (str(assessor_path or "shipped: dcjax/assessors/selection.npz") if assessor else None),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seeds": seeds,
              "damaged_epochs": damaged,   # snapshots on disk that could not be read: not candidates
              "chance": run_chance_test(workdir, {s["seed"]: s["epoch"] for s in seeds}, phase)}
    (workdir / "selection.json").write_text(json.dumps(result, indent=2) + "\n")
    keep_path = workdir / "keep_epochs.json"
    keep = json.loads(keep_path.read_text()) if keep_path.exists() else {}
    keep[phase] = sorted(set(keep.get(phase, [])) | {s["epoch"] for s in seeds})
    keep_path.write_text(json.dumps(keep, indent=2) + "\n")
    return result


def run_chance_test(workdir, epochs: dict[int, int] | None = None, phase: str | None = None) -> dict:
    """`chance.chance_test` on a run's partitions, one per seed: the epoch
    `epochs[seed]` (default: the phase's last) of the selection phase (or
    `phase`). A pretraining epoch is clustered as the score table clusters it."""
    workdir = Path(workdir)
    phase = phase or selection_phase(workdir)
    config = checkpointing.load_config(workdir)
    seeds, k = train.seed_ids(config), _n_clusters(config)
    with evaluate._quiet_orbax():
        last = checkpointing.list_epochs(workdir, phase)[-1]
    epochs = epochs or {seed: last for seed in seeds}
    partitions = []
    with checkpointing.snapshot_reader(workdir, phase) as load, evaluate._quiet_orbax():
        snaps = {epoch: load(epoch) for epoch in sorted(set(epochs.values()))}
        for i, seed in enumerate(seeds):
            epoch, snap = epochs[seed], snaps[epochs[seed]]
            if phase == "pretrain":
                z = jnp.asarray(snap["embedding"][i:i + 1], jnp.float32)
                labels = evaluate.kmeans_seeds(z, evaluate.kmeans_key(seed, epoch)[None], k,
                                               int(config.kmeans.n_init))[0]
            else:
                labels = snap["assignments"][i]
            partitions.append(np.asarray(labels))
    return chance.chance_test(np.stack(partitions), k) | {"phase": phase,
                                                          "epochs": {str(s): int(e) for s, e in epochs.items()}}


# ============================================================ 6. study metrics (labels: evaluation only)

DO_NO_HARM = 0.005   # selected ACC within half an ACC point of the final epoch's, or better


def truth_table(workdir, progress: bool = False) -> pd.DataFrame:
    """ACC/NMI/ARI per seed x epoch of the selection phase. These are the
    labels, for scoring selectors (and fitting assessors) only; no selector reads them."""
    table = scores_table(workdir, labels=True, progress=progress)
    table = table[table.phase == selection_phase(workdir)]
    return table[ID + LABEL_BASED].reset_index(drop=True)


def _best_epoch(run: pd.DataFrame, column: str) -> int:
    v = run[column].to_numpy(float)
    return int(run.epoch.to_numpy()[np.flatnonzero(v >= np.nanmax(v) - 1e-12)].max())


def outcomes(selections: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, selector, seed): the selected, final and oracle-best
    epoch (best ACC; an upper bound that no selector can know), their
    ACC/NMI/ARI, the regret (oracle ACC - selected ACC) and the gain over the
    final epoch. `selections`: run, selector, seed, epoch; `truth`: run, seed,
    epoch, acc, nmi, ari."""
    rows = []
    for (run, seed), t in truth.groupby(["run", "seed"], sort=False):
        t = t.set_index("epoch")
        final, oracle = int(t.index.max()), _best_epoch(t.reset_index(), "acc")
        picks = selections[(selections.run == run) & (selections.seed == seed)]
        for pick in picks.itertuples(index=False):
            row = {"run": run, "selector": pick.selector, "seed": seed,
                   "epoch": int(pick.epoch), "final_epoch": final, "oracle_epoch": oracle}
            for m in LABEL_BASED:
                row |= {f"{m}_selected": t.at[int(pick.epoch), m], f"{m}_final": t.at[final, m],
                        f"{m}_oracle": t.at[oracle, m]}
            rows.append(row)
    out = pd.DataFrame(rows)
    out["regret"] = out.acc_oracle - out.acc_selected
    out["gain_vs_final"] = out.acc_selected - out.acc_final
    out["win"] = out.gain_vs_final > 0
    out["do_no_harm"] = out.gain_vs_final >= -DO_NO_HARM
    return out


def summarize(out: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means over seeds (and runs) per group: ACC/NMI/ARI selected, final,
    oracle; regret; win rate vs final (strictly better ACC); do-no-harm rate."""
    columns = ([f"{m}_{w}" for w in ("selected", "final", "oracle") for m in LABEL_BASED]
               + ["regret", "gain_vs_final", "win", "do_no_harm"])
    table = out.groupby(by, sort=False)[columns].mean()
    table["n"] = out.groupby(by, sort=False).size()
    return table.reset_index()


def wilcoxon_vs(out: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per selector: one-sided Wilcoxon signed-rank test that its ACC is
    greater than `baseline`'s, paired by (run, seed). Zero differences are
    split between the ranks ('zsplit'), so ties count against a difference.
    p is NaN when every pair ties."""
    base = out[out.selector == baseline].set_index(["run", "seed"]).acc_selected
    rows = []
    for name, group in out.groupby("selector", sort=False):
        if name == baseline:
            continue
        d = (group.set_index(["run", "seed"]).acc_selected - base).dropna().to_numpy()
        p = (stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
             if len(d) and np.any(d != 0) else np.nan)
        rows.append({"selector": name, "baseline": baseline, "pairs": len(d), "mean_diff": float(np.mean(d)),
                     "better": int(np.sum(d > 0)), "worse": int(np.sum(d < 0)), "p_greater": p})
    return pd.DataFrame(rows)


def score_acc_spearman(feats: pd.DataFrame, truth: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Spearman correlation between each column and ACC across the epochs of
    a seed, averaged over seeds: how well the score tracks ACC within one run."""
    merged = feats.merge(truth[ID + ["acc"]], on=ID)
    per_seed = []
    for _, run in merged.groupby("seed"):
        per_seed.append({c: stats.spearmanr(run[c], run.acc, nan_policy="omit").statistic
                         if run[c].nunique() > 1 else np.nan for c in columns if c in run})
    return pd.DataFrame(per_seed).mean()


def oracle_vs_final(truth: pd.DataFrame) -> pd.DataFrame:
    """Per run: how often and by how much the oracle-best epoch beats the final
    one (ACC), and how far apart they are in epochs."""
    rows = []
    for (run, seed), t in truth.groupby(["run", "seed"], sort=False):
        final, oracle = int(t.epoch.max()), _best_epoch(t, "acc")
        acc = t.set_index("epoch").acc.sort_index()
        steps = acc.to_numpy(np.float64)
        rows.append({"run": run, "seed": seed, "final_epoch": final, "oracle_epoch": oracle,
                     "gain": acc[oracle] - acc[final], "epochs_apart": final - oracle,
                     # How smooth ACC is from epoch to epoch: where consecutive epochs are
                     # barely correlated, the oracle picks the luckiest of many noisy draws.
                     "step_change": float(np.mean(np.abs(np.diff(steps)))) if len(steps) > 1 else np.nan,
                     "lag1_autocorr": lag1_autocorr(steps)})
    per_seed = pd.DataFrame(rows)
    return per_seed.groupby("run", sort=False).agg(
        seeds=("seed", "size"), differs=("gain", lambda g: float(np.mean(g > 0))),
        differs_by_half_point=("gain", lambda g: float(np.mean(g > DO_NO_HARM))),
        mean_gain=("gain", "mean"), max_gain=("gain", "max"),
        mean_epochs_apart=("epochs_apart", "mean"), oracle_epochs=("oracle_epoch", lambda e: list(e)),
        step_change=("step_change", "mean"), lag1_autocorr=("lag1_autocorr", "mean")).reset_index()
