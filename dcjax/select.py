"""Choose, without labels, the epoch of a finished run that gave the best clusters.

    python -m dcjax.select --workdir runs/x
    python -m dcjax.select --workdir runs/x --selector pooled_silhouette
    python -m dcjax.select --workdir runs/x --launch-selector consensus

Scores the run first (`dcjax.evaluate`, cached in <workdir>/scores.csv; an
existing table written with labels is reused, its label columns unread).
Then it prints, per seed, the chosen epoch and why. It writes
<workdir>/selection.json (the choice, the why, whether the epoch's full
state is still on disk) and adds the chosen epochs to
<workdir>/keep_epochs.json, {phase: [epochs]}, for checkpoint retention.
Selectors: see `dcjax.selection.SELECTORS`, plus those that use a trained
assessor: by default the study's, shipped inside the package
(`dcjax.shipped_assessor`), or --assessor FILE (written by
experiments/selection_study.py): 'assessor', the epoch it rates best;
'assessor_guarded' (the study's primary), which keeps the final
epoch unless the chosen one is predicted clearly better;
'assessor_noise_guarded', which also keeps the final epoch of a noise-dominated
seed (measured: it costs regret and buys no do-no-harm, selection.md).
The default, 'default', is 'assessor_guarded' on the algorithms the shipped
assessor was trained on (AE+k-means, DEC, IDEC, DCN, DKM) and the final
epoch on any other (UNSEEN, DECCS), where the assessor was measured not to
help (`selection.resolve_default`); it says so when it falls back.
Whatever the selector, a seed whose partitions change in quality at random
from epoch to epoch is flagged ('noise_dominated' in selection.json, and a
warning here): no epoch of it can be told apart without labels. And the run
as a whole is tested against chance (`dcjax.chance`: do the seeds' chosen
partitions agree more than structureless data lets them? 'chance' in
selection.json, and a line here).
After the per-seed lines, the launch's choice (`dcjax.launch`): which seed
and epoch of all the seeds, or their consensus, and why. It goes to
selection.json ('launch'), its labels to <workdir>/selected_labels.npy.
"""
import argparse
import contextlib
import logging
from pathlib import Path

from dcjax import launch, selection
from dcjax import run as run_lib

DEFAULT_SELECTOR = selection.DEFAULT_SELECTOR   # the study's primary where the assessor knows the algorithm


def selection_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--workdir, --selector, --assessor: the choice's arguments, the same for
    this command and `python -m dcjax.report`, which chooses as it does."""
    ap.add_argument("--workdir", required=True, help="the run (what dcjax.main wrote)")
    ap.add_argument("--selector", default=DEFAULT_SELECTOR,
                    choices=[DEFAULT_SELECTOR, *selection.ASSESSOR_SELECTORS, *selection.SELECTORS],
                    help=f"how to choose (default: {DEFAULT_SELECTOR}: {selection.IN_DOMAIN_SELECTOR}, the study's "
                         f"primary, on the algorithms the shipped assessor was trained on, else the final epoch)")
    ap.add_argument("--assessor", help="trained assessor file (.npz or .joblib) for the assessor "
                    "selectors (default: the study's, shipped with dcjax)")
    ap.add_argument("--launch-selector", choices=list(launch.LAUNCH_SELECTORS),
                    help=f"how to choose among the seeds (default: {launch.DEFAULT_LAUNCH_SELECTOR} for a fixed "
                         f"k, {launch.DEFAULT_UNKNOWN_K_SELECTOR} where seeds keep different numbers of clusters)")
    return ap


def parse_selection_arguments(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The arguments, with a plain error for a workdir without a run or a missing assessor file."""
    args = ap.parse_args(argv)
    if not (Path(args.workdir) / "config.json").exists():
        ap.error(f"{args.workdir} holds no run (no config.json): pass the --workdir that dcjax.main wrote")
    if args.assessor and not Path(args.assessor).exists():
        ap.error(f"assessor file {args.assessor} not found")
    logging.getLogger("absl").setLevel(logging.ERROR)
    return args


def main(argv=None):
    ap = selection_arguments(argparse.ArgumentParser(prog="python -m dcjax.select",
                                                     description=__doc__.split("\n\n")[0]))
    ap.add_argument("--progress", action="store_true", help="progress bar while scoring new epochs")
    args = parse_selection_arguments(ap, argv)
    with one_line_errors(ap):
        return _select(args)


# What reading a run can meet that is the run's state, not a bug: said in one line, exit status 2.
READING_ERRORS = (run_lib.RunReadError, PermissionError)


@contextlib.contextmanager
def one_line_errors(ap: argparse.ArgumentParser):
    try:
        yield
    except READING_ERRORS as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")


def _select(args) -> dict:
    result = selection.select_run(args.workdir, args.selector, args.assessor, progress=args.progress)
    print(f"{args.workdir}: selector {result['selector']}, phase {result['phase']}")
    if result["default_because"]:
        print(f"  ({result['default_because']})")
    for s in result["seeds"]:
        state = "model state stored" if s["state_present"] else "model state rebuilt on load (replay)"
        print(f"  seed {s['seed']}: epoch {s['epoch']} of {s['final_epoch']} [{state}]: {s['why']}")
        if s.get("diverged"):
            d = s["diverged"]
            print(f"    warning: seed {s['seed']} diverged (non-finite loss) in {d['phase']} epoch {d['epoch']}; "
                  f"its state stayed at epoch {d['last_finite_epoch']} of {d['phase']}, so later epochs are not candidates")
        if s["noise_dominated"]:
            print(f"    warning: seed {s['seed']} is noise-dominated (lag-1 autocorrelation of the "
                  f"{selection.NOISE_COLUMN} {s['noise_autocorr']:.2f} < {selection.NOISE_AUTOCORR}): "
                  "its epochs differ in quality at random, no selector can tell them apart without labels")
    print(f"  {result['chance']['message']} (the chosen epochs)")
    if result["status"]["message"]:
        print(f"  warning: {result['status']['message']}")
    if result["damaged_epochs"]:
        print(f"  left out, their snapshot damaged (unreadable): epochs {result['damaged_epochs']}")
    result["launch"] = report_launch(args.workdir, result, args.launch_selector)
    print(f"wrote {args.workdir}/selection.json, {args.workdir}/keep_epochs.json and "
          f"{args.workdir}/selected_labels.npy")
    return result


def report_launch(workdir, result: dict, selector: str | None = None) -> dict:
    """The launch's choice among all seeds x epochs and their consensus
    (`dcjax.launch`), printed after the per-seed lines."""
    choice = launch.select_launch(workdir, result, selector)
    if choice["selector"] is None:
        print(f"launch: one seed, so its selected epoch {choice['epoch']}")
        return choice
    what = (f"the {choice['candidate']}" if choice["seed"] == -1
            else f"seed {choice['seed']}, epoch {choice['epoch']}")
    print(f"launch ({len(result['seeds'])} seeds, {choice['n_candidates']} candidates, selector "
          f"{choice['selector']}): {what}")
    print(f"  why: {choice['why']}")
    return choice


if __name__ == "__main__":
    main()
