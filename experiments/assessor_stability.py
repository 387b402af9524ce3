"""How much do the primary assessor's study numbers depend on which runs it
was trained on? Re-fits the leave-one-dataset-out primary (`selection_study.PRIMARY`)
with a few random runs (data set x algorithm x seed batch) left out of every
training set, judging all runs each time, and reports the spread of mean
regret, p90 regret, do-no-harm and the gain over the final epoch per algorithm.

    python experiments/assessor_stability.py --repeats 5 --drop 5
    python experiments/assessor_stability.py --model-seeds 4     # random_state 1..4, all runs train

The second form keeps every training run and changes only the gradient-boosting
models' random_state (they subsample rows; the study uses 0): the part of the
spread that is the model's own randomness, not the data's. It writes
experiments/results/assessor_model_seeds.md.

Reads only the committed tables in experiments/results/scores/. Writes
experiments/results/assessor_stability.md. Dropping 5 of the ~46 runs mirrors
the change that adding Fashion-MNIST's 5 runs made (selection.md, notes).
"""
import argparse
import logging
import time

import numpy as np
import pandas as pd

from dcjax import selection, study
from selection_study import ASSESSORS, PRIMARY, RESULTS, markdown, read_run_csv, study_tables


def primary_outcomes(runs, truth, train_on=None, seed: int = 0) -> pd.DataFrame:
    group, kind, guard, target, noise_guard = ASSESSORS[PRIMARY]
    chosen = study.cross_fit(runs, group, kind, guard, None, target, noise_guard=noise_guard,
                                 train_on=train_on, seed=seed)
    picks = pd.concat([c.assign(run=run, selector=PRIMARY) for run, c in chosen.items()], ignore_index=True)
    return study.outcomes(picks, truth)


def summary(out: pd.DataFrame, algorithm_of: dict) -> dict:
    row = {"mean regret": 100 * out.regret.mean(), "p90 regret": 100 * out.regret.quantile(0.9),
           "do-no-harm %": 100 * out.do_no_harm.mean(), "gain vs final": 100 * out.gain_vs_final.mean()}
    by_alg = out.assign(algorithm=out.run.map(algorithm_of)).groupby("algorithm").gain_vs_final.mean()
    return row | {f"gain {a}": 100 * g for a, g in by_alg.items()}


def write(rows, args, seconds, runs, truth) -> str:
    """The report so far: written after every repeat, so a cut-off run leaves its rows."""
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("training runs", "left out")]
    spread = table.iloc[1:][numeric].agg(["min", "median", "max", "std"])
    lines = ["# Stability of the primary assessor to its training runs", "",
             f"Command: `python experiments/assessor_stability.py --repeats {args.repeats} --drop {args.drop} "
             f"--seed {args.seed}` ({seconds:.0f} s on 2 shared CPU cores; {len(rows) - 1} of "
             f"{args.repeats} repeats done).", "",
             f"`{PRIMARY}`, leave-one-dataset-out as in selection.md, judged on all {len(truth.groupby(['run', 'seed']))} "
             f"(run, seed) pairs of {len(runs)} runs; in each repeat {args.drop} random runs (data set × algorithm × "
             "seed batch) may not train any assessor. ACC points.", "",
             *markdown(table.round(2)), "", "Spread over the repeats (all but the first row):", "",
             *markdown(spread.round(2).reset_index(names="")), ""]
    path = RESULTS / "assessor_stability.md"
    path.write_text("\n".join(lines))
    return "\n".join(lines)


def write_model_seeds(rows, args, seconds, runs, truth) -> str:
    """The --model-seeds report so far, written after every seed like `write`."""
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c != "random_state"]
    spread = table[numeric].agg(["min", "median", "max", "std"])
    lines = ["# The primary assessor under other random_states of its models", "",
             f"Command: `python experiments/assessor_stability.py --model-seeds {args.model_seeds}` ({seconds:.0f} s "
             f"on 2 shared CPU cores; {len(rows) - 1} of {args.model_seeds} other seeds done).", "",
             f"`{PRIMARY}`, leave-one-dataset-out as in selection.md, trained on every run and judged on all "
             f"{len(truth.groupby(['run', 'seed']))} (run, seed) pairs of {len(runs)} runs. Only the gradient-boosting "
             "models' random_state changes (row subsampling, 0.8 per tree); random_state 0 is the study's. ACC points.", "",
             *markdown(table.round(2)), "", "Spread over all rows:", "",
             *markdown(spread.round(2).reset_index(names="")), ""]
    (RESULTS / "assessor_model_seeds.md").write_text("\n".join(lines))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--drop", type=int, default=5, help="runs left out of every training set per repeat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-seeds", type=int, default=0,
                    help="instead: re-fit with the models' random_state 1..N, every run training")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    runs = [(selection.features(b), t) for b, t in map(read_run_csv, study_tables())]
    truth = pd.concat([t for _, t in runs], ignore_index=True)
    names = sorted(f.attrs["run"] for f, _ in runs)
    algorithm_of = {f.attrs["run"]: f.attrs["algorithm"] for f, _ in runs}
    if args.model_seeds:
        rows = []
        for seed in range(args.model_seeds + 1):
            rows.append({"random_state": seed} | summary(primary_outcomes(runs, truth, seed=seed), algorithm_of))
            print(rows[-1], flush=True)
            report = write_model_seeds(rows, args, time.perf_counter() - t0, runs, truth)
        print(report)
        return
    rows = [{"training runs": "all", "left out": "–"} | summary(primary_outcomes(runs, truth), algorithm_of)]
    print(rows[-1], flush=True)
    report = write(rows, args, time.perf_counter() - t0, runs, truth)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.repeats):
        dropped = sorted(rng.choice(names, size=args.drop, replace=False))
        keep = set(names) - set(dropped)
        rows.append({"training runs": f"all but {args.drop}", "left out": ", ".join(d.split("protocol/")[-1] for d in dropped)}
                    | summary(primary_outcomes(runs, truth, train_on=keep), algorithm_of))
        print(rows[-1], flush=True)
        report = write(rows, args, time.perf_counter() - t0, runs, truth)
    print(report)
    print(f"wrote {RESULTS / 'assessor_stability.md'}")


if __name__ == "__main__":
    main()
