"""A learned launch selector: which seed of a launch to use, predicted from
the label-free scores of each seed's final epoch (issue 20's "assessor
re-targeted to predict an ACC level"), fitted leave-one-dataset-out.

    python experiments/launch_assessor.py      # ~1 min, from the committed score tables alone

The per-seed assessor ranks the epochs of one seed; it cannot say which of
two seeds is better, because its inputs are ranks within a seed. Here each
seed's final epoch is one row, its features are the per-seed study's
features (`selection.features`) standardised within its launch (a z-score
over the launch's seeds), and the target is its ACC minus the launch's mean
final ACC: how much better than a random seed it is. The model picks the
seed with the highest prediction. Beside it: `control_shuffled`, the same
model fitted to ACC permuted among each training launch's seeds (what it
would gain by chance), and `max_final_size_entropy`, the one feature it
leans on, alone.

Launches: 5 seeds of one data set x algorithm (seeds 0-4 and 5-9 of the
per-seed study's tables in scores/, MNIST and Fashion-MNIST 3 seeds, for
training only; and every launch of scores_launch/). Only the five algorithms
the per-seed study trained. For each of digits, Optdigits, Pendigits and
USPS the models are fitted on the launches of the other data sets and
scored on that one's. The baselines come from launch_study.py's outcome
tables; its target and test helpers score the choices. Writes
experiments/results/launch_assessor.md and launch_assessor.csv.
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from launch_study import (BASELINES, LAUNCH_SCORES, RESULTS, TRAINED_ON, pts, target_rows,  # noqa: E402
                          test_rows)
from selection_study import markdown, read_run_csv, study_tables  # noqa: E402

from dcjax import selection  # noqa: E402

HELD_OUT = ("digits", "optdigits", "pendigits", "usps")
MODELS = ("gbr", "ridge")   # selection._model's two kinds; gbr declared the primary before any was scored
SHUFFLE_SEED = 0            # the control: the primary fitted to ACC permuted among each training launch's seeds
OUT = RESULTS / "launch_assessor.md"


def seed_rows(path: Path) -> pd.DataFrame:
    """One row per seed of a score table: the features at its final epoch and its final ACC."""
    base, truth = read_run_csv(path)
    feats = selection.features(base)
    final = feats.epoch.max()
    rows = feats[feats.epoch == final].drop(columns=["epoch"]).reset_index(drop=True)
    acc = truth[truth.epoch == final].set_index("seed").acc
    return rows.assign(acc=rows.seed.map(acc).to_numpy(), dataset=base.attrs["dataset"],
                       algorithm=base.attrs["algorithm"], source=path.parent.name)


def all_seeds() -> pd.DataFrame:
    """Every seed, with its launch: seeds 0-4 or 5-9 of the per-seed study's
    data set x algorithm (as launch_study.py's table-only launches), or the
    launch study's file."""
    frames = []
    for path in study_tables():
        rows = seed_rows(path)
        frames.append(rows.assign(launch=[f"{d}_{a}_s{0 if s < 5 else 5}"
                                          for d, a, s in zip(rows.dataset, rows.algorithm, rows.seed)]))
    for path in sorted(LAUNCH_SCORES.glob("*.csv")):
        frames.append(seed_rows(path).assign(launch=path.stem))
    seeds = pd.concat(frames, ignore_index=True)
    # a launch is (source, name): the per-seed study's seeds 5-9 and a launch
    # study's run of seeds 5-9 share a name (e.g. optdigits_dec_s5)
    seeds["key"] = seeds.source + "/" + seeds.launch
    return seeds[seeds.algorithm.isin(TRAINED_ON)].reset_index(drop=True)


def within_launch(seeds: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Each feature as a z-score over the seeds of its launch; 0 where it is
    constant or undefined (the neutral value)."""
    g = seeds.groupby("key")[names]
    z = (seeds[names] - g.transform("mean")) / g.transform("std")
    return z.replace([np.inf, -np.inf], np.nan).fillna(0.0).to_numpy(np.float64)


def fit_predict(train: pd.DataFrame, test: pd.DataFrame, names: list[str], kind: str) -> np.ndarray:
    target = train.acc - train.groupby("key").acc.transform("mean")
    model = selection._model(kind).fit(within_launch(train, names), target.to_numpy(np.float64))
    return model.predict(within_launch(test, names))


def shuffled(train: pd.DataFrame) -> pd.DataFrame:
    """The training rows with ACC permuted among the seeds of each launch:
    what the model gains from that is what chance and the features' own
    structure give, with no signal about which seed is better."""
    rng = np.random.default_rng(SHUFFLE_SEED)
    return train.assign(acc=train.groupby("key").acc.transform(lambda a: rng.permutation(a.to_numpy())))


def choices(seeds: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per launch of the four held-out data sets: the final ACC of each
    model's seed; and the features the models read."""
    not_features = {"acc", "dataset", "algorithm", "launch", "source", "key", "epoch_fraction"}
    names = sorted(c for c in selection.feature_names(seeds)   # the features every algorithm has
                   if c not in not_features and seeds[c].notna().all())
    assert not set(names) & {"acc", *selection.LABEL_BASED}, "a label column among the features"
    rows = []
    for held_out in HELD_OUT:
        train, test = seeds[seeds.dataset != held_out], seeds[seeds.dataset == held_out]
        train = train[train.groupby("key").seed.transform("size") >= 3]
        predicted = {kind: fit_predict(train, test, names, kind) for kind in MODELS}
        predicted["shuffled"] = fit_predict(shuffled(train), test, names, MODELS[0])
        test = pd.concat([test.reset_index(drop=True),
                          pd.DataFrame({f"p_{k}": v for k, v in predicted.items()})], axis=1)
        for _, g in test.groupby("key"):
            if len(g) < 5:
                continue
            rows.append({"launch": g.launch.iloc[0], "dataset": held_out, "algorithm": g.algorithm.iloc[0],
                         "source": g.source.iloc[0], "train_launches": train.key.nunique(),
                         **{f"learned_{k}": g.acc[g[f"p_{k}"].idxmax()] for k in MODELS},
                         "control_shuffled": g.acc[g.p_shuffled.idxmax()],
                         # the rule the model leans on most, alone: no fit
                         "max_final_size_entropy": g.acc[g.size_entropy.idxmax()]})
    return pd.DataFrame(rows), names


def what_it_reads(seeds: pd.DataFrame, names: list[str], top: int = 6) -> pd.DataFrame:
    """The primary fitted on every launch: its largest feature importances,
    and each of those features' Spearman correlation with the seed's ACC
    minus its launch's mean, both as the model sees them (within-launch z-scores)."""
    from scipy.stats import spearmanr
    train = seeds[seeds.groupby("key").seed.transform("size") >= 3]
    target = (train.acc - train.groupby("key").acc.transform("mean")).to_numpy(np.float64)
    x = within_launch(train, names)
    model = selection._model(MODELS[0]).fit(x, target)
    order = np.argsort(model.feature_importances_)[::-1][:top]
    return pd.DataFrame({"feature": [names[i] for i in order],
                         "importance": [f"{model.feature_importances_[i]:.3f}" for i in order],
                         "spearman with ACC (within launch)": [f"{spearmanr(x[:, i], target).statistic:+.2f}"
                                                               for i in order]})


def baselines() -> pd.DataFrame:
    """launch_study.py's outcome tables: the table-only launches (scores/) and
    the launches with partitions (scores_launch/, the default and consensus too)."""
    tables = pd.read_csv(RESULTS / "launch_outcomes_tables.csv").assign(source="scores")
    partitions = pd.read_csv(RESULTS / "launch_outcomes.csv").assign(source="scores_launch")
    partitions = partitions[partitions.algorithm.isin(TRAINED_ON)]
    return pd.concat([tables, partitions], ignore_index=True)


def main():
    t0 = time.perf_counter()
    seeds = all_seeds()
    picks, names = choices(seeds)
    launches = picks.merge(baselines(), on=["launch", "source", "dataset", "algorithm"], how="inner", validate="1:1")
    launches.to_csv(RESULTS / "launch_assessor.csv", index=False, float_format="%.5g")
    chosen = [f"learned_{k}" for k in MODELS] + ["control_shuffled", "max_final_size_entropy"]
    lines = ["# A learned launch selector (leave-one-dataset-out)", "",
             f"Command: `python experiments/launch_assessor.py` ({time.perf_counter() - t0:.0f} s; committed score "
             "tables only). " + __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"{len(names)} features (those every trained algorithm's table has): " + ", ".join(names) + ".", "",
             f"What the primary leans on, fitted on all {seeds.key.nunique()} launches:", "",
             *markdown(what_it_reads(seeds, names)), ""]
    for title, group in (("Launches of the per-seed study's tables (seeds 0-4 and 5-9)",
                          launches[launches.source == "scores"]),
                         ("Launches of the launch study (scores_launch/: digits seeds 10-24, and the other data "
                          "sets' launches with partitions)", launches[launches.source == "scores_launch"]),
                         ("All launches", launches)):
        if group.empty:
            continue
        per = [{"data set": ds, "launches": len(g), **{c: pts(g[c].mean() - g.random_final.mean())
                                                        for c in [*chosen, *BASELINES[1:]]},
                "oracle": pts(g.oracle.mean() - g.random_final.mean())}
               for ds, g in group.groupby("dataset")]
        lines += [f"## {title}: {len(group)} launches", "",
                  "Gain over the random seed's final epoch, ACC points, per held-out data set:", "",
                  *markdown(pd.DataFrame(per)), "",
                  *markdown(pd.DataFrame(target_rows(group, [*chosen, *BASELINES]))), "",
                  "One-sided tests against each baseline, paired by launch (mean difference: p cluster "
                  "bootstrap / p Wilcoxon):", "",
                  *markdown(pd.DataFrame(test_rows(group, [*chosen, *BASELINES]))), ""]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
