"""Choose, without labels, the epoch of a finished run that gave the best clusters.

    python -m dcjax.select --workdir runs/x --selector assessor_guarded --assessor experiments/results/assessor_selection.joblib
    python -m dcjax.select --workdir runs/x --selector pooled_silhouette

Scores the run first (`dcjax.evaluate`, cached in <workdir>/scores.csv; an
existing table written with labels is reused, its label columns unread).
Then it prints, per seed, the chosen epoch and why. It writes
<workdir>/selection.json (the choice, the why, whether the epoch's full
state is still on disk) and adds the chosen epochs to
<workdir>/keep_epochs.json, {phase: [epochs]}, for checkpoint retention.
Selectors: see `dcjax.selection.SELECTORS`, plus 'assessor' (needs --assessor,
a file written by experiments/selection_study.py) and 'assessor_guarded', the
same with both "do no harm" guards: the final epoch is kept unless the chosen
epoch is predicted clearly better, and in a noise-dominated run (the why says so).
"""
import argparse
import logging

from dcjax import selection


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dcjax.select", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="the run (what dcjax.main wrote)")
    ap.add_argument("--selector", default="assessor_guarded",
                    choices=["assessor", "assessor_guarded", *selection.SELECTORS],
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
    print(f"wrote {args.workdir}/selection.json and {args.workdir}/keep_epochs.json")
    return result


if __name__ == "__main__":
    main()
