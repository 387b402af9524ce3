"""Does a pairwise ranking objective pick better epochs than rank regression?
The same linear model class both ways (ridge on within-seed ACC ranks
against `selection.PairwiseRanker`, a linear RankNet on pairs of epochs of
one seed), the same features, each fitted leave-one-dataset-out on the
committed per-epoch score tables; the earlier 230 pairs (scores/) and the
seeds trained for issue 20 (scores_launch/) are reported apart. Kept only if
it wins on the new seeds.

    python experiments/ranking_objective.py
"""
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from selection_study import SCORES, markdown, read_run_csv, study_tables  # noqa: E402

from dcjax import selection, study  # noqa: E402

LAUNCH_SCORES = SCORES.parent / "scores_launch"   # the seeds trained for issue 20
CANDIDATES = {"ridge_rank": ("ridge", "rank"), "linear_pairwise": ("ridge", "pairwise")}


def main():
    t0 = time.perf_counter()
    runs, new = [], set()
    for path in study_tables() + sorted(LAUNCH_SCORES.glob("*.csv")):
        base, truth = read_run_csv(path)
        runs.append((selection.features(base), truth))
        if path.parent == LAUNCH_SCORES:
            new.add(base.attrs["run"])
    truth = pd.concat([t for _, t in runs], ignore_index=True)
    info = pd.DataFrame([f.attrs for f, _ in runs])[["run", "dataset", "algorithm"]]
    picks = [selection.select_last(f).assign(run=f.attrs["run"], selector="last") for f, _ in runs]
    for name, (kind, target) in CANDIDATES.items():
        for run, chosen in study.cross_fit(runs, "dataset", kind, 0.0, target=target).items():
            picks.append(chosen.assign(run=run, selector=name))
    out = study.outcomes(pd.concat(picks, ignore_index=True), truth).merge(info, on="run")
    rows = []
    for part, sel in (("earlier pairs", ~out.run.isin(new)), ("new seeds (issue 20)", out.run.isin(new))):
        for name, g in out[sel].groupby("selector", sort=False):
            rows.append({"pairs": part, "selector": name, "n": len(g), "gain vs final": f"{100 * g.gain_vs_final.mean():+.2f}",
                         "mean regret": f"{100 * g.regret.mean():.2f}", "p90 regret": f"{100 * g.regret.quantile(0.9):.2f}",
                         "do-no-harm": f"{100 * g.do_no_harm.mean():.0f}%"})
    print("\n".join(markdown(pd.DataFrame(rows))))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
