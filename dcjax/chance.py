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
entropy, below 2: DKM collapses so on shuffled digits) carries no structure
whatever the agreement.

It needs at least two seeds; with one it says it cannot tell. It is a
warning: it changes no result. `chance_test` takes partitions (the run
summary, `dcjax.select` through `selection.run_chance_test`);
`chance_test_table` takes an evaluation table (`scores.csv`, the report).
"""
import math

import jax.numpy as jnp
import numpy as np
import pandas as pd

from dcjax import metrics

AGREEMENT_THRESHOLD = 0.45   # mean pairwise ARI across seeds below this: no better than chance
MIN_EFFECTIVE_CLUSTERS = 2.0


STATISTIC = "mean pairwise ARI across seeds"


def verdict(agreement: float, effective_clusters: float, seeds: int, agreement_nmi: float = float("nan")) -> dict:
    """The test's outcome as a plain dict (JSON-ready; selection.json and
    summary.json keep it under 'chance'): `statistic` and its `value`, the
    `threshold` below which it warns, `looks_like_chance` (None: cannot
    tell), a one-line `message`, and what else was read."""
    finite = math.isfinite(agreement)
    out = {"statistic": STATISTIC, "value": agreement if finite else None,   # JSON has no NaN
           "threshold": AGREEMENT_THRESHOLD, "seeds": seeds, "effective_clusters": effective_clusters,
           "min_effective_clusters": MIN_EFFECTIVE_CLUSTERS,
           "agreement_nmi": agreement_nmi if math.isfinite(agreement_nmi) else None}   # for reading only
    if seeds < 2 or not finite:
        return out | {"looks_like_chance": None,
                      "message": "chance test: needs at least 2 seeds (cross-seed agreement); not tested"}
    if effective_clusters < MIN_EFFECTIVE_CLUSTERS:
        return out | {"looks_like_chance": True,
                      "message": f"WARNING: no better than chance: the partitions are essentially one cluster "
                                 f"(effective number of clusters {effective_clusters:.2f} < {MIN_EFFECTIVE_CLUSTERS:g})"}
    if agreement < AGREEMENT_THRESHOLD:
        return out | {"looks_like_chance": True,
                      "message": f"WARNING: no better than chance: the {seeds} seeds agree at ARI {agreement:.3f} "
                                 f"< {AGREEMENT_THRESHOLD} (structureless data reaches this; see dcjax/chance.py)"}
    return out | {"looks_like_chance": False,
                  "message": f"chance test: the {seeds} seeds agree at ARI {agreement:.3f} >= {AGREEMENT_THRESHOLD}: "
                             "more structure than chance"}


def chance_test(partitions, n_clusters: int) -> dict:
    """`verdict` for partitions (S, N), one row per seed, of the same rows."""
    partitions = jnp.asarray(partitions, jnp.int32)
    agreement = metrics.seed_agreement(partitions, n_clusters)
    entropy = np.asarray([metrics.cluster_size_entropy(p, n_clusters) for p in partitions], np.float64)
    return verdict(float(agreement["mean_pairwise_ari"]), float(np.mean(np.exp(entropy))), len(partitions),
                   float(agreement["mean_pairwise_nmi"]))


def chance_test_table(table: pd.DataFrame, n_clusters: int) -> pd.DataFrame:
    """One row per phase x epoch of an evaluation table (its `mean_pairwise_ari`
    and `size_entropy` columns, normalised as evaluate.py writes it): the
    verdict's columns, without its sentence."""
    rows = []
    for (phase, epoch), g in table.groupby(["phase", "epoch"], sort=False):
        effective = float(np.mean(np.power(float(n_clusters), g["size_entropy"].to_numpy(np.float64))))
        result = verdict(float(g["mean_pairwise_ari"].mean()), effective, g["seed"].nunique(),
                         float(g["mean_pairwise_nmi"].mean()))
        rows.append({"phase": phase, "epoch": epoch, **{k: v for k, v in result.items() if k != "message"}})
    return pd.DataFrame(rows)
