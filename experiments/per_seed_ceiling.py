"""Issue 35: how far a per-seed epoch rule could go on the launches scored so far.

    python experiments/per_seed_ceiling.py    # ~1-4 min (the k-means draws); writes results/uneven/per_seed_ceiling.md

Post hoc and descriptive, like launch_ceiling.py: nothing here chooses a
default. The issue asks of the per-seed default, on uneven and tabular
launches, regret <= 1.0 ACC points to the seed's best epoch and do-no-harm
>= 95% (not below the final epoch). On every seed of rounds 1-3's uneven
and tabular launches (never round 4's, scored after its own registration),
per algorithm:

- the final epoch (the default where the assessor is not used);
- each label-free column of the per-epoch table alone, its best direction,
  picked **in hindsight** per algorithm: the column and direction whose
  argmax epoch has the lowest mean regret on these very seeds. It is a
  ceiling for any rule that reads one score, not an estimate;
- how much of the final epoch's regret is the k-means draw: AE+k-means's
  "epochs" are k-means runs on 100 pretraining embeddings, and the seed's
  best of them is a best-of-100 draw.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

sys.path.insert(0, str(Path(__file__).parent))
import launch_rules  # noqa: E402
import launch_study  # noqa: E402
import uneven_study  # noqa: E402
from selection_study import markdown  # noqa: E402

from dcjax import checkpointing, evaluate, study  # noqa: E402

UNSEEN_SCORED = [f"{n}_{a}" for n in ("optdigits_r5", "optdigits_r20") for a in launch_rules.UNSEEN]   # round 3's
NOT_SCORES = {"run", "dataset", "algorithm", "phase", "seed", "epoch", *evaluate.LABEL_BASED, "acc", "nmi", "ari"}


def scored_launches() -> list[str]:
    rows = pd.concat([pd.read_csv(launch_rules.OUT / f) for f in launch_rules.SCORED_ROWS], ignore_index=True)
    return sorted(set(rows[rows.data_kind != "balanced"].launch)) + UNSEEN_SCORED


def per_seed(stem: str) -> pd.DataFrame:
    """One row per seed x label-free column x direction: ACC (points) of its argmax epoch, the final's, the best."""
    base, truth = study.read_run_csv(uneven_study.SCORES / f"{stem}.csv")
    table = base.merge(truth[["seed", "epoch", "acc"]], on=["seed", "epoch"])
    columns = [c for c in table.columns if c not in NOT_SCORES and table[c].notna().any()
               and np.issubdtype(table[c].dtype, np.number)]
    rows = []
    for seed, g in table.groupby("seed"):
        g = g.sort_values("epoch")
        final, best = g.acc.iloc[-1], g.acc.max()
        for column in columns:
            values = g[column].to_numpy(np.float64)
            if not np.isfinite(values).any():
                continue
            for sign, word in ((1, "highest"), (-1, "lowest")):
                pick = g.acc.iloc[int(np.nanargmax(sign * values))]
                rows.append({"launch": stem, "algorithm": base.attrs["algorithm"], "seed": seed,
                             "rule": f"{word} {column}", "acc": 100 * pick, "final": 100 * final,
                             "best": 100 * best})
        rows.append({"launch": stem, "algorithm": base.attrs["algorithm"], "seed": seed, "rule": "final epoch",
                     "acc": 100 * final, "final": 100 * final, "best": 100 * best})
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(regret=frame.best - frame.acc, harmless=frame.acc >= frame.final - 1e-9)
    out = []
    for algorithm, g in frame.groupby("algorithm"):
        by_rule = g.groupby("rule").agg(regret=("regret", "mean"), harmless=("harmless", "mean"))
        final = by_rule.loc["final epoch"]
        best = by_rule.drop(index="final epoch").sort_values("regret").iloc[0]
        safe = by_rule.drop(index="final epoch").query("harmless >= 0.95").sort_values("regret")
        out.append({"algorithm": algorithm, "seeds": g[g.rule == "final epoch"].shape[0],
                    "final epoch: regret": f"{final.regret:.2f}",
                    "best column in hindsight": best.name, "its regret (≤ 1.0)": f"{best.regret:.2f}",
                    "its do-no-harm (≥ 95%)": f"{100 * best.harmless:.0f}%",
                    "best column with do-no-harm ≥ 95%": (f"{safe.index[0]}: {safe.regret.iloc[0]:.2f}"
                                                          if len(safe) else "none")})
    return pd.DataFrame(out)


def kmeans_draw(frame: pd.DataFrame, draws: int = 10) -> list[str]:
    """AE+k-means: the best epoch against the final one, beside the spread of
    the k-means readout itself on one fixed embedding (each seed's final
    pretraining embedding, `draws` runs of k-means with the scoring pass's
    10 starts, best inertia, other random states; needs round 3's run
    folders, which are not committed)."""
    stems = frame[frame.algorithm == "ae_kmeans"].launch.unique()
    gaps_all = []
    for stem in stems:
        _, truth = study.read_run_csv(uneven_study.SCORES / f"{stem}.csv")
        gaps_all += [100 * (g.acc.max() - g.sort_values("epoch").acc.iloc[-1]) for _, g in truth.groupby("seed")]
    lines = [f"AE+k-means ({len(gaps_all)} seeds): its per-seed candidates are the k-means of 100 pretraining "
             f"epochs; the best is {np.mean(gaps_all):.2f} ACC points above the final epoch.", ""]
    rows = []
    for name in launch_rules.ROUND3:
        workdir = uneven_study.RUNS / name / "ae_kmeans"
        if not (workdir / "summary.json").exists():
            continue
        z = checkpointing.load_snapshot(workdir, 100, "pretrain")["embedding"]
        y = uneven_study.labels_of(name)
        k = int(y.max()) + 1
        accs = np.array([[launch_study.accuracy(y, KMeans(k, n_init=10, random_state=r).fit_predict(z[s]), k)
                          for r in range(draws)] for s in range(len(z))])
        rows.append({"data set": name, "seeds": len(z),
                     "best of the draws minus their mean": f"{100 * (accs.max(1) - accs.mean(1)).mean():.2f}",
                     "sd of a draw": f"{100 * accs.std(1).mean():.2f}"})
    if rows:
        lines += [f"The k-means readout alone, on one fixed embedding per seed ({draws} draws of k-means with 10 "
                  "starts each, the lowest inertia kept, as the scoring pass does; ACC points):", "",
                  *markdown(pd.DataFrame(rows)), "",
                  "So on AE+k-means much of the regret to the best epoch is which k-means solution a draw lands "
                  "on, not how far the embedding trained; k-means' own criterion (inertia) already chose among "
                  "10 starts in each draw.", ""]
    return lines


def main():
    frame = pd.concat([per_seed(stem) for stem in scored_launches()], ignore_index=True)
    lines = [f"#### Per-seed rules in hindsight: {frame.launch.nunique()} uneven and tabular launches of rounds 1-3", "",
             "ACC points. Regret: to the seed's best epoch; do-no-harm: not below its final epoch.", "",
             *markdown(summary(frame)), "", *kmeans_draw(frame)]
    (launch_rules.OUT / "per_seed_ceiling.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
