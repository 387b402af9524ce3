"""Is a run better than chance? A label-free warning, for every algorithm.

A run trains several seeds: other initial weights, batch orders and k-means
starts, the same data. Clusters that are in the data are found by every seed,
so the seeds' partitions agree; on data without cluster structure each seed
cuts the data its own way, and they do not. Every algorithm here finds k
clusters in anything: DEC on uniform noise ends with a silhouette of 0.6 (its
loss makes the clusters), so the partitions' own geometry cannot tell.

The number: cross-seed agreement, the mean adjusted Rand index (ARI) over
every pair of seeds. ARI is corrected for chance under the permutation model:
two partitions with these cluster sizes, rows paired at random, score 0 on
average. That baseline is not enough on its own: the seeds share the data,
so on noise they still agree a little above 0 (AE+k-means on uniform noise
of digits' shape: NMI 0.07). The threshold, `AGREEMENT_THRESHOLD` = 0.45,
sits between the structureless controls (highest: DKM on uniform noise,
ARI 0.30 on 2.7 effective clusters) and the committed protocol runs (lowest:
DKM on USPS, 0.65), measured by experiments/chance_study.py
(experiments/results/chance.md); it was set after seeing both, so runs
made later (DECCS's) are its out-of-sample check. A partition that is
essentially one cluster (effective number of clusters, exp of the size
entropy, below 2: DKM collapses so on shuffled digits; below 1.5 for k = 2,
where 2 takes two exactly equal halves) carries no structure whatever the
agreement.

It needs at least two seeds; with one it says it cannot tell. It is a
warning: it changes no result. `chance_test` takes partitions (the run
summary, `dcjax.select` through `selection.run_chance_test`);
`chance_test_table` takes an evaluation table (`scores.csv`, the report).

Near the line one number says too much: a launch at ARI 0.452 is 'more than
chance' and one at 0.448 is not, though another draw of the same points or
seeds could swap them. `chance_test` therefore carries an `interval`: a 95%
percentile bootstrap of the statistic (`agreement_interval`), resampling the
points with replacement and, with three or more seeds, the pairs of seeds
too (`BOOTSTRAP_RESAMPLES` resamples, numpy seed `BOOTSTRAP_SEED`, on at most
`BOOTSTRAP_POINTS` points: reproducible and well under a second). The
verdict reads the interval: wholly below the threshold, a warning
(`looks_like_chance` True); at or above it, more than chance (False);
straddling it, 'inconclusive' (`looks_like_chance` None, as when it cannot
tell, and the message says which). The one-cluster rule needs no interval.
`chance_test_table` has no partitions to resample, so its verdicts read the
point value alone (`interval` None).

Seeds can also disagree on data that has clusters, when the clustering
phase takes them apart: DKM on an uneven MNIST subsample (classes 1,000 down
to 200) starts from k-means partitions that agree at ARI 0.57 (interval
0.56 to 0.59) and ends at 0.33, each seed having merged other classes
(issue 35, round 3). Structureless data gives no such start: on the
controls the clustering runs' epoch-0 partitions (k-means on the pretrained
autoencoders) agree at 0.03 (uniform) and 0.12 (shuffled digits),
experiments/results/chance.md, so every control is still called chance. So `chance_test` takes the same seeds' partitions at the
start of clustering (`start`) when it has them: if those agree (their
interval at or above the line) and the tested ones do not, the verdict is
`came_apart` (True), not chance: a warning that the seeds' clusters are
their own, with both agreements in the message.
"""
import math

import jax.numpy as jnp
import numpy as np
import pandas as pd

from dcjax import metrics

AGREEMENT_THRESHOLD = 0.45   # mean pairwise ARI across seeds below this: no better than chance
MIN_EFFECTIVE_CLUSTERS = 2.0


def min_effective_clusters(n_clusters: int | None = None) -> float:
    """Below this effective number of clusters a partition is 'essentially one
    cluster': 2 (`MIN_EFFECTIVE_CLUSTERS`), except with k = 2, where 2 is
    reached only by two exactly equal halves; there the line is halfway
    between one cluster and two (1.5: sizes 212/357, breast cancer's
    classes, are 1.93; 90/10 is 1.38)."""
    if n_clusters is not None and n_clusters <= 2:
        return 1.5
    return MIN_EFFECTIVE_CLUSTERS
BOOTSTRAP_RESAMPLES = 200     # the interval: resamples of points (and of seed pairs) ...
BOOTSTRAP_SEED = 0            # ... drawn by numpy's default_rng(BOOTSTRAP_SEED)
BOOTSTRAP_POINTS = 5000       # ... on at most this many points (a fixed subsample)
INTERVAL_LEVEL = 0.95


STATISTIC = "mean pairwise ARI across seeds"


def verdict(agreement: float, effective_clusters: float, seeds: int, agreement_nmi: float = float("nan"),
            interval: tuple[float, float] | None = None, n_clusters: int | None = None) -> dict:
    """The test's outcome as a plain dict (JSON-ready; selection.json and
    summary.json keep it under 'chance'): `statistic` and its `value`, the
    `threshold` below which it warns, `interval` ([lo, hi], the bootstrap
    interval of the value, or None), `looks_like_chance` (True: warn; False:
    more than chance; None: cannot tell, or inconclusive: the interval
    straddles the threshold), a one-line `message`, and what else was read."""
    finite = math.isfinite(agreement)
    floor = min_effective_clusters(n_clusters)
    if interval is not None and not all(math.isfinite(v) for v in interval):
        interval = None
    out = {"statistic": STATISTIC, "value": agreement if finite else None,   # JSON has no NaN
           "threshold": AGREEMENT_THRESHOLD, "seeds": seeds, "effective_clusters": effective_clusters,
           "min_effective_clusters": floor,
           "agreement_nmi": agreement_nmi if math.isfinite(agreement_nmi) else None,   # for reading only
           "interval": None if interval is None else [float(interval[0]), float(interval[1])],
           "interval_level": INTERVAL_LEVEL if interval is not None else None, "inconclusive": False}
    if seeds < 2 or not finite:
        return out | {"looks_like_chance": None,
                      "message": "chance test: needs at least 2 seeds (cross-seed agreement); not tested"}
    if effective_clusters < floor:
        return out | {"looks_like_chance": True,
                      "message": f"WARNING: no better than chance: the partitions are essentially one cluster "
                                 f"(effective number of clusters {effective_clusters:.2f} < {floor:g})"}
    lo, hi = (agreement, agreement) if interval is None else interval
    span = "" if interval is None else f" ({100 * INTERVAL_LEVEL:.0f}% interval {lo:.3f} to {hi:.3f})"
    if hi < AGREEMENT_THRESHOLD:
        return out | {"looks_like_chance": True,
                      "message": f"WARNING: no better than chance: the {seeds} seeds agree at ARI {agreement:.3f}"
                                 f"{span} < {AGREEMENT_THRESHOLD} (structureless data reaches this; see "
                                 "dcjax/chance.py)"}
    if lo < AGREEMENT_THRESHOLD:
        return out | {"looks_like_chance": None, "inconclusive": True,
                      "message": f"chance test inconclusive: the {seeds} seeds agree at ARI {agreement:.3f}{span}, "
                                 f"an interval that straddles the line {AGREEMENT_THRESHOLD}: it may be no better "
                                 "than chance (more seeds narrow it; see dcjax/chance.py)"}
    return out | {"looks_like_chance": False,
                  "message": f"chance test: the {seeds} seeds agree at ARI {agreement:.3f}{span} >= "
                             f"{AGREEMENT_THRESHOLD}: more structure than chance"}


def _ari_from_tables(tables: np.ndarray) -> np.ndarray:
    """Adjusted Rand index of contingency tables (..., ka, kb) with real-valued
    (bootstrap-weighted) counts; 1.0 where both partitions are trivial, as
    sklearn's adjusted_rand_score."""
    def comb2(v):
        return v * (v - 1) / 2
    n = tables.sum(axis=(-2, -1))
    index = comb2(tables).sum(axis=(-2, -1))
    rows, cols = comb2(tables.sum(axis=-1)).sum(axis=-1), comb2(tables.sum(axis=-2)).sum(axis=-1)
    expected = rows * cols / np.maximum(comb2(n), 1e-12)
    top = (rows + cols) / 2
    denom = top - expected
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(denom) < 1e-12, 1.0, (index - expected) / denom)


def agreement_interval(partitions, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       points: int = BOOTSTRAP_POINTS, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean pairwise ARI of partitions
    (S, N): each resample draws the points with replacement (multinomial
    weights on a fixed subsample of at most `points`) and, with S >= 3, the
    S(S-1)/2 pairs of seeds with replacement; the statistic is recomputed from
    the weighted contingency tables. (NaN, NaN) for S < 2."""
    labels = np.asarray(partitions)
    s, n = labels.shape
    if s < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if n > points:
        labels = labels[:, np.sort(rng.choice(n, points, replace=False))]
        n = points
    _, labels = np.unique(labels, return_inverse=True)   # compact label range over all seeds
    labels = labels.reshape(s, n)
    k = int(labels.max()) + 1
    first, second = np.triu_indices(s, k=1)
    weights = np.stack([np.bincount(rng.integers(n, size=n), minlength=n) for _ in range(resamples)])   # (B, n)
    offsets = (np.arange(resamples) * k * k)[:, None]
    aris = np.empty((resamples, len(first)))
    for p, (a, b) in enumerate(zip(first, second)):
        codes = offsets + (labels[a] * k + labels[b])[None]
        tables = np.bincount(codes.ravel(), weights=weights.ravel(), minlength=resamples * k * k)
        aris[:, p] = _ari_from_tables(tables.reshape(resamples, k, k))
    if len(first) > 1:   # the pairs too: which seeds a launch happened to get
        pick = rng.integers(len(first), size=(resamples, len(first)))
        stats = np.take_along_axis(aris, pick, axis=1).mean(axis=1)
    else:
        stats = aris[:, 0]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def chance_test(partitions, n_clusters: int, start=None) -> dict:
    """`verdict` for partitions (S, N), one row per seed, of the same rows,
    with the bootstrap `interval` of the agreement (`agreement_interval`).
    `start`: the same seeds' partitions at the start of clustering (S, N),
    or None; read only when the agreement is below the line or straddles
    it (`came_apart`)."""
    labels = np.asarray(partitions)
    partitions = jnp.asarray(labels, jnp.int32)
    agreement = metrics.seed_agreement(partitions, n_clusters)
    entropy = np.asarray([metrics.cluster_size_entropy(p, n_clusters) for p in partitions], np.float64)
    interval = agreement_interval(labels) if len(labels) >= 2 else None
    result = verdict(float(agreement["mean_pairwise_ari"]), float(np.mean(np.exp(entropy))), len(partitions),
                     float(agreement["mean_pairwise_nmi"]), interval, n_clusters=n_clusters)
    result["came_apart"] = False
    if start is None or result["looks_like_chance"] is False or result["value"] is None \
            or result["effective_clusters"] < result["min_effective_clusters"]:
        return result
    first = chance_test(start, n_clusters)
    result["start"] = {k: first[k] for k in ("value", "interval", "effective_clusters", "looks_like_chance")}
    if first["looks_like_chance"] is not False:
        return result
    return result | came_apart(result, first)


def came_apart(now: dict, start: dict) -> dict:
    """The verdict's fields when the seeds agreed at the start of clustering
    and no longer do: not chance (structureless data gives no such start),
    a warning all the same."""
    def said(v):
        return f"ARI {v['value']:.3f}" + ("" if v["interval"] is None else
                                          f", {100 * INTERVAL_LEVEL:.0f}% interval {v['interval'][0]:.3f} to "
                                          f"{v['interval'][1]:.3f}")
    return {"looks_like_chance": None, "inconclusive": False, "came_apart": True,
            "message": f"WARNING: the {now['seeds']} seeds' partitions disagree ({said(now)}; "
                       f"{'below' if not now['inconclusive'] else 'straddling'} the line {AGREEMENT_THRESHOLD}), "
                       f"though they agreed at the start of clustering ({said(start)}): the clustering phase took "
                       "them apart, so this is not structureless data, but each seed's clusters are its own "
                       "(compare an earlier epoch or another algorithm; see dcjax/chance.py)"}


def chance_test_table(table: pd.DataFrame, n_clusters: int) -> pd.DataFrame:
    """One row per phase x epoch of an evaluation table (its `mean_pairwise_ari`
    and `size_entropy` columns, normalised as evaluate.py writes it): the
    verdict's columns, without its sentence."""
    rows = []
    for (phase, epoch), g in table.groupby(["phase", "epoch"], sort=False):
        effective = float(np.mean(np.power(float(n_clusters), g["size_entropy"].to_numpy(np.float64))))
        result = verdict(float(g["mean_pairwise_ari"].mean()), effective, g["seed"].nunique(),
                         float(g["mean_pairwise_nmi"].mean()), n_clusters=n_clusters)
        rows.append({"phase": phase, "epoch": epoch, **{k: v for k, v in result.items() if k != "message"}})
    return pd.DataFrame(rows)
