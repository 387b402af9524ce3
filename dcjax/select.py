"""Choose, without labels, the epoch of a finished run that gave the best clusters.

    python -m dcjax.select --workdir runs/x --assessor experiments/results/assessor_selection.joblib
    python -m dcjax.select --workdir runs/x --selector pooled_silhouette

Scores the run first (`dcjax.evaluate`, cached in <workdir>/scores.csv; an
existing table written with labels is reused, its label columns unread).
Then it prints, per seed, the chosen epoch and why. It writes
<workdir>/selection.json (the choice, the why, whether the epoch's full
state is still on disk) and adds the chosen epochs to
<workdir>/keep_epochs.json, {phase: [epochs]}, for checkpoint retention.
Selectors: see `dcjax.selection.SELECTORS`, plus three that need --assessor (a
file written by experiments/selection_study.py): 'assessor', the epoch it
rates best; 'assessor_guarded' (the default, the study's primary), which keeps
the final epoch unless the chosen one is predicted clearly better;
'assessor_noise_guarded', which also keeps the final epoch of a noise-dominated
seed (measured: it costs regret and buys no do-no-harm, selection.md).
Whatever the selector, a seed whose partitions change in quality at random
from epoch to epoch is flagged ('noise_dominated' in selection.json, and a
warning here): no epoch of it can be told apart without labels. And the run
as a whole is tested against chance (`dcjax.chance`: do the seeds' chosen
partitions agree more than structureless data lets them? 'chance' in
selection.json, and a line here).
"""
import argparse
import logging

from dcjax import selection


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dcjax.select", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="the run (what dcjax.main wrote)")
    ap.add_argument("--selector", default="assessor_guarded",
                    choices=[*selection.ASSESSOR_SELECTORS, *selection.SELECTORS],
                    help="how to choose (default: assessor_guarded, the study's primary)")
    ap.add_argument("--assessor", help="trained assessor file (.joblib) for --selector assessor")
    ap.add_argument("--progress", action="store_true", help="progress bar while scoring new epochs")
    args = ap.parse_args(argv)
    if args.selector.startswith("assessor") and not args.assessor:
        ap.error("--selector assessor needs --assessor PATH (or pick another --selector)")
    logging.getLogger("absl").setLevel(logging.ERROR)
    result = selection.select_run(args.workdir, args.selector, args.assessor, progress=args.progress)
    print(f"{args.workdir}: selector {args.selector}, phase {result['phase']}")
    for s in result["seeds"]:
        state = "full state kept" if s["state_present"] else "snapshot only (full state pruned)"
        print(f"  seed {s['seed']}: epoch {s['epoch']} of {s['final_epoch']} [{state}]: {s['why']}")
        if s["noise_dominated"]:
            print(f"    warning: seed {s['seed']} is noise-dominated (lag-1 autocorrelation of the "
                  f"{selection.NOISE_COLUMN} {s['noise_autocorr']:.2f} < {selection.NOISE_AUTOCORR}): "
                  "its epochs differ in quality at random, no selector can tell them apart without labels")
    print(f"  {result['chance']['message']} (the chosen epochs)")
    print(f"wrote {args.workdir}/selection.json and {args.workdir}/keep_epochs.json")
    return result


if __name__ == "__main__":
    main()
