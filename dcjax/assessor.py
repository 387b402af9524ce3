"""The learned assessor: which epoch of a seed is best, predicted from label-free features.

A scikit-learn regressor on within-seed ranks of the features
(`dcjax.features`). It predicts the within-seed ACC rank of an epoch. It is
fitted (`train_assessor`, the one function here that takes ACC) on OTHER
runs (`dcjax.study.cross_fit`: leave-one-dataset-out or leave-one-algorithm-out).
It is saved as a small file, so applying it to a new run needs no labels at
all. Its guard keeps the final epoch unless the chosen one is predicted
clearly better ("do no harm"); the collapse guard takes clustering epoch 0
where the clusters collapsed from the start.
"""
import functools
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from dcjax.features import ID, NOISE_AUTOCORR, NOISE_COLUMN, feature_names, noise_dominated


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


def trained_algorithms(assessor: dict) -> set[str]:
    """The algorithms whose runs trained `assessor`: the last part of each
    run folder it names (runs/protocol/<data set>/<algorithm>)."""
    return {Path(run).name for run in assessor.get("trained_on", [])}


@functools.lru_cache(maxsize=1)
def _shipped_algorithms() -> frozenset[str]:
    """`trained_algorithms` of the shipped assessor, read once per process
    (the launch study resolves the default for every launch)."""
    return frozenset(trained_algorithms(load_assessor()))


