"""Does DKM lose ACC where its clusters become uneven? Across DKM seeds, the
Spearman correlation between the change of the normalised cluster-size
entropy (epoch 0 -> final) and the change of ACC, from the committed score tables.

    python experiments/dkm_size_entropy.py

A between-seed check of the hypothesis in selection.md (notes); no selector uses it.
"""
from pathlib import Path

import pandas as pd
from scipy import stats

SCORES = Path(__file__).parent / "results" / "scores"


def changes() -> pd.DataFrame:
    rows = []
    for path in sorted(SCORES.glob("*_dkm*.csv")):
        if "_unseen_" in path.name:   # UNSEEN+DKM is another algorithm
            continue
        table = pd.read_csv(path)
        for seed, run in table.sort_values("epoch").groupby("seed"):
            rows.append({"dataset": path.stem.split("_")[0], "seed": seed,
                         "entropy_change": run.size_entropy.iloc[-1] - run.size_entropy.iloc[0],
                         "acc_change": run.acc.iloc[-1] - run.acc.iloc[0]})
    return pd.DataFrame(rows)


def main():
    d = changes()
    for label, part in (("all data sets", d), ("without USPS (where it was noticed)", d[d.dataset != "usps"])):
        rho = stats.spearmanr(part.entropy_change, part.acc_change)
        print(f"{label}: {len(part)} DKM seeds, Spearman {rho.statistic:+.2f} (p = {rho.pvalue:.1g})")


if __name__ == "__main__":
    main()
