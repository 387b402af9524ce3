"""Issue 35: the per-seed assessor retrained on the wider grid, scored on
seeds it never saw.

    python experiments/assessor_wide.py fit     # the primary's recipe on the wider tables (~4 min)
    python experiments/assessor_wide.py test    # on the round-2 seeds, beside the shipped default and the final epoch
    python experiments/assessor_wide.py ship    # make it the study's primary, then: python experiments/export_assessor.py

The shipped assessor (`selection.load_assessor()`) learned from the per-seed
study's tables (experiments/results/scores/: digits, Optdigits, USPS,
Pendigits, MNIST, Fashion-MNIST; the five base algorithms). The wider one
is the same recipe (`selection.train_assessor(runs, "gbr", target=
"ensemble")`, used guarded as the primary) fitted on those tables plus every
uneven and tabular table of issue 35's seen launches (round 1:
optdigits_r10, pendigits_r10, wine, breast cancer, DECCS included), the
UNSEEN tables of experiments/results/scores/ (which the per-seed study
left out) and the DECCS tables of experiments/results/scores_launch/. Its test: the round-2 seeds (experiments/results/
uneven_round2_preregistration.md, 3.), never used to fit either model.
It met the registered bar there (pooled regret 1.53 against the final
epoch's 1.76 and the old shipped model's 2.04, do-no-harm 96%), so `ship`
made it the study's primary (experiments/results/assessor_selection.joblib)
and experiments/export_assessor.py shipped it (dcjax/assessors/selection.npz,
its arrays, and assessor_shipped_picks.csv, its picks on the per-seed study's
tables, which tests/test_shipped_assessor.py checks).
"""
import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import launch_rules  # noqa: E402
import uneven_study  # noqa: E402
from launch_study import LAUNCH_SCORES  # noqa: E402
import selection_study  # noqa: E402
from selection_study import SCORES, read_run_csv, study_tables  # noqa: E402

from dcjax import selection  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "runs" / "assessor_wide.joblib"   # not committed (~MBs)
OUT = uneven_study.OUT


def wide_tables() -> list[Path]:
    seen = launch_rules.round1_names()
    uneven = [p for p in sorted(uneven_study.SCORES.glob("*.csv"))
              if any(p.stem.startswith(f"{n}_") for n in seen)]
    unseen = sorted(SCORES.glob("*_unseen_*.csv"))                   # study_tables() leaves them out
    deccs = sorted(LAUNCH_SCORES.glob("*_deccs*.csv"))
    return [*study_tables(), *uneven, *unseen, *deccs]


def fit():
    t0 = time.perf_counter()
    runs = []
    for path in wide_tables():
        base, truth = read_run_csv(path)
        runs.append((selection.features(base), truth))
    assessor = selection.train_assessor(runs, "gbr", target="ensemble")
    selection.save_assessor(assessor, MODEL)
    print(f"fitted on {len(runs)} tables ({assessor['rows']} rows) in {time.perf_counter() - t0:.0f} s -> {MODEL}")


def test() -> pd.DataFrame:
    """Per-seed outcomes on the round-2 launches: the wide assessor (guarded)
    beside what `launch_rules.per_seed` reports."""
    wide = selection.load_assessor(MODEL)
    out = launch_rules.against_final(launch_rules.ROUND2_SCORED, launch_rules.FIXED_K, "wide",
                                     lambda feats, _: selection.select(feats, "assessor_guarded", wide))
    out.to_csv(OUT / "round2_per_seed_wide.csv", index=False, float_format="%.5g")
    print(pd.DataFrame(uneven_study.per_seed_rows(out)).to_string())
    return out


def ship():
    """The fitted model becomes the study's primary; experiments/export_assessor.py
    then writes its arrays into the package and its picks beside them."""
    saved = selection.save_assessor(selection.load_assessor(MODEL), selection_study.RESULTS / "assessor_selection.joblib")
    print(f"{saved}: now python experiments/export_assessor.py")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["fit", "test", "ship"])
    {"fit": fit, "test": test, "ship": ship}[ap.parse_args().command]()
