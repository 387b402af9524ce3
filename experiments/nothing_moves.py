"""Two readings of the same run agree: scores, per-seed and launch choices.

    python experiments/nothing_moves.py BEFORE AFTER

BEFORE and AFTER are copies of one run, each read by `python -m dcjax.select`
(e.g. BEFORE by the code before a change, AFTER by the code after it). Prints
the largest difference of every score column over the rows both have, and
whether selection.json's per-seed epochs, launch choice and
selected_labels.npy are the same. Exits 1 where anything differs by more than
--atol.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["seed", "phase", "epoch"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args()
    before, after = Path(args.before), Path(args.after)
    a, b = (pd.read_csv(p / "scores.csv").set_index(KEY) for p in (before, after))
    common = a.index.intersection(b.index)
    columns = [c for c in a.columns if c in b.columns and c != "eval_seconds" and a[c].dtype.kind == "f"]
    diff = (a.loc[common, columns] - b.loc[common, columns]).abs()
    both_nan = a.loc[common, columns].isna() & b.loc[common, columns].isna()
    worst = diff.where(~both_nan).max().fillna(0.0)
    one_nan = (a.loc[common, columns].isna() ^ b.loc[common, columns].isna()).sum().sum()
    print(f"scores: {len(common)} rows in both ({len(a)} before, {len(b)} after), {len(columns)} columns; "
          f"largest difference {worst.max():.3g} ({worst.idxmax()}); NaN in one only: {one_nan}")
    sa, sb = (json.loads((p / "selection.json").read_text()) for p in (before, after))
    seeds_same = [(s["seed"], s["epoch"]) for s in sa["seeds"]] == [(s["seed"], s["epoch"]) for s in sb["seeds"]]
    launch_same = {k: sa["launch"][k] for k in ("candidate", "seed", "epoch")} == \
        {k: sb["launch"][k] for k in ("candidate", "seed", "epoch")}
    labels_same = np.array_equal(np.load(before / "selected_labels.npy"), np.load(after / "selected_labels.npy"))
    print(f"per-seed epochs the same: {seeds_same}; launch choice the same: {launch_same} "
          f"({sb['launch']['candidate']}); selected_labels.npy the same: {labels_same}")
    ok = worst.max() <= args.atol and one_nan == 0 and seeds_same and launch_same and labels_same
    print("nothing moved" if ok else "MOVED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
