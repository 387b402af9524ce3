"""Issue 35: how far a launch rule could go on the launches scored so far.

    python experiments/launch_ceiling.py      # ~10 s; writes results/uneven/launch_ceiling.md

Post hoc and descriptive: nothing here chooses a default. Three rounds
found no label-free launch rule that meets the issue's targets on uneven
data (gain >= +2.0 over a random seed's final partition, regret <= 2.0 to
the launch oracle, below the launch's median seed in <= 10%). This asks
whether any rule of the kind tried could, on the same launches:

- the **floor**: a rule that always took the best of the candidates every
  launch rule chooses among (each seed's per-seed selected epoch), which
  needs the labels. Its regret is what no seed-choosing rule can go under;
  also with each seed's final epoch as its candidate;
- **each label-free column alone**, its best direction, picked in
  hindsight on these launches;
- **a model over all the columns fitted on the launches it is scored on**
  (in-sample: ridge, and gradient boosting, which memorises). Out of
  sample (the registered learned rules, leave-one-family-out) they do
  worse; in-sample is a ceiling, not an estimate.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge

sys.path.insert(0, str(Path(__file__).parent))
import launch_rules  # noqa: E402
from selection_study import markdown  # noqa: E402



def outcome(seeds: pd.DataFrame, pick: pd.Series) -> dict:
    """The issue's three launch measures of `pick` (a row index per launch), in ACC points."""
    rows = []
    for name, g in seeds.groupby("launch"):
        acc = g.acc[pick[name]]
        rows.append({"gain": acc - g.acc_final.mean(), "regret": g.oracle.iloc[0] - acc,
                     "worse": float(acc < np.median(g.acc_final) - 1e-9)})
    d = pd.DataFrame(rows)
    return {"gain (≥ +2.0)": f"{100 * d.gain.mean():+.2f}", "regret (≤ 2.0)": f"{100 * d.regret.mean():.2f}",
            "worse (≤ 10%)": f"{100 * d.worse.mean():.0f}%"}


def ceiling(seeds: pd.DataFrame) -> list[dict]:
    rows = [{"rule": "floor: the best per-seed candidate (needs labels)",
             **outcome(seeds, seeds.groupby("launch").acc.idxmax())},
            {"rule": "floor with the final epochs as candidates (needs labels)",
             **outcome(seeds.assign(acc=seeds.acc_final), seeds.groupby("launch").acc_final.idxmax())}]
    singles = []
    for column in launch_rules.FEATURES:
        for sign, word in ((1, "highest"), (-1, "lowest")):
            pick = (sign * seeds[f"z_{column}"]).groupby(seeds.launch).idxmax()
            singles.append({"rule": f"{word} {column}", **outcome(seeds, pick)})
    best = max(singles, key=lambda r: float(r["gain (≥ +2.0)"]))
    rows.append({**best, "rule": f"best single column in hindsight: {best['rule']}"})
    x, y = launch_rules.model_inputs(seeds), seeds.target.to_numpy()
    for label, model in (("ridge over every column, fitted in-sample", Ridge(alpha=1.0)),
                         ("gradient boosting, fitted in-sample (memorises)",
                          GradientBoostingRegressor(random_state=launch_rules.MODEL_SEED))):
        predicted = pd.Series(model.fit(x, y).predict(x), index=seeds.index)
        rows.append({"rule": label, **outcome(seeds, predicted.groupby(seeds.launch).idxmax())})
    return rows


def main():
    frame = launch_rules.read_rows(launch_rules.SCORED_ROWS)
    lines = []
    for title, keep in (("uneven and tabular (rounds 1-3)", frame.data_kind != "balanced"),
                        ("balanced (the benchmarks)", frame.data_kind == "balanced")):
        seeds = frame[keep & (frame.kind == "epoch")]
        lines += [f"#### {title}: {seeds.launch.nunique()} launches", "", *markdown(pd.DataFrame(ceiling(seeds))), ""]
    out = launch_rules.OUT / "launch_ceiling.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
