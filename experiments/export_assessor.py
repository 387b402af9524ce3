"""Ship the study's primary assessor inside the package, as arrays.

    python experiments/export_assessor.py [--refit]

Reads experiments/results/assessor_selection.joblib (since issue 35's round
2: what `experiments/assessor_wide.py fit` trains on the wider grid of
committed score tables, `assessor_wide.py ship` copies there; before it, what
`selection_study.py --name selection` trained on the per-seed study's
tables) and writes
- dcjax/assessors/selection.npz: its trees as arrays (`dcjax.shipped_assessor`),
  package data that loads under any scikit-learn version;
- experiments/results/assessor_shipped_picks.csv: the epoch that the
  study's model picks with its guard (`assessor_guarded`, what
  `python -m dcjax.select` runs) for every (run, seed) of the committed score
  tables; tests/test_shipped_assessor.py checks the shipped file against it.
It checks that the arrays predict bit for bit what the joblib model predicts
on every committed table of the per-seed study. `--refit` also refits the
assessor from the committed tables it learned from (`assessor_wide.wide_tables`)
and checks that it is the same model.
"""
import argparse
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from dcjax import selection, shipped_assessor

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from selection_study import (PICKS, PRIMARY, PRIMARY_TARGET, RESULTS, export, read_run_csv,  # noqa: E402
                             study_tables)

STUDY_MODEL = RESULTS / "assessor_selection.joblib"


def committed_runs() -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    runs = []
    for path in study_tables():
        base, truth = read_run_csv(path)
        runs.append((selection.features(base), truth))
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refit", action="store_true", help="refit from the committed tables and compare")
    args = ap.parse_args()
    t0 = time.perf_counter()
    study = joblib.load(STUDY_MODEL)
    runs = committed_runs()
    picks = export(study, runs)
    picks.to_csv(PICKS, index=False)
    print(f"wrote {shipped_assessor.SHIPPED} ({shipped_assessor.SHIPPED.stat().st_size / 1024:.0f} KiB) and "
          f"{PICKS} ({len(picks)} (run, seed) pairs); identical predictions on {len(runs)} tables")
    outcomes = pd.read_csv(RESULTS / "selection_outcomes.csv")
    primary = outcomes[outcomes.selector == PRIMARY][["run", "seed", "epoch", "acc_selected"]]
    last = outcomes[outcomes.selector == "last"].set_index(["run", "seed"]).acc_selected
    truth = pd.concat([t for _, t in runs]).set_index(["run", "seed", "epoch"]).acc
    both = primary.merge(picks, on=["run", "seed"], suffixes=("_study", "_shipped"))
    acc_shipped = truth.loc[list(zip(both.run, both.seed, both.epoch_shipped))].to_numpy()
    gain = acc_shipped - last.loc[list(zip(both.run, both.seed))].to_numpy()
    print(f"{len(both)} of {len(primary)} pairs of the study's cross-fitted primary ({PRIMARY}): the shipped "
          f"model picks the same epoch in {np.mean(both.epoch_study == both.epoch_shipped):.0%}; in sample, "
          f"its ACC vs the final epoch's {100 * gain.mean():+.2f} points (the cross-fitted primary: "
          f"{100 * (both.acc_selected - last.loc[list(zip(both.run, both.seed))].to_numpy()).mean():+.2f})")
    if args.refit:
        from assessor_wide import wide_tables
        wide = [(selection.features(b), t) for b, t in map(read_run_csv, wide_tables())]
        refit = selection.train_assessor(wide, "gbr", target=PRIMARY_TARGET)
        same = all(np.array_equal(refit["members"][t]["model"].predict(x), study["members"][t]["model"].predict(x))
                   for t in study["members"]
                   for x in [np.concatenate([selection.rank_features(f.reset_index(drop=True), study["features"])
                                             for f, _ in runs])])
        print(f"refit from the committed tables: {'the same model' if same else 'DIFFERENT predictions'} "
              f"({refit['rows']} rows, the study's file: {study['rows']})")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
