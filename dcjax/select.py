"""Choose, without labels, the epoch of a finished run that gave the best clusters.

    dcjax select --workdir runs/x               (or python -m dcjax.select --workdir runs/x)
    dcjax select --workdir runs/x --selector pooled_silhouette
    dcjax select --workdir runs/x --launch_selector consensus

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
import contextlib
import logging
from pathlib import Path

from absl import flags

from dcjax import cli, launch, selection
from dcjax import run as run_lib

DEFAULT_SELECTOR = selection.DEFAULT_SELECTOR   # the study's primary where the assessor knows the algorithm


def define_selection_flags(fv: flags.FlagValues) -> None:
    """--workdir, --selector, --assessor, --launch_selector: the choice's flags,
    the same for this command and `dcjax report`, which chooses as it does."""
    flags.DEFINE_string("workdir", None, "the run (what dcjax train wrote)", flag_values=fv)
    flags.DEFINE_enum("selector", DEFAULT_SELECTOR,
                      [DEFAULT_SELECTOR, *selection.ASSESSOR_SELECTORS, *selection.SELECTORS],
                      f"how to choose (default: {DEFAULT_SELECTOR}: {selection.IN_DOMAIN_SELECTOR}, the study's "
                      f"primary, on the algorithms the shipped assessor was trained on, else the final epoch)",
                      flag_values=fv)
    flags.DEFINE_string("assessor", None, "trained assessor file (.npz or .joblib) for the assessor "
                        "selectors (default: the study's, shipped with dcjax)", flag_values=fv)
    flags.DEFINE_enum("launch_selector", None, list(launch.LAUNCH_SELECTORS),
                      f"how to choose among the seeds (default: for a fixed k, {launch.DEFAULT_LAUNCH_SELECTOR} where "
                      f"the run's dataset.cluster_sizes is 'even' (the benchmarks), {launch.DEFAULT_UNEVEN_SELECTOR} "
                      f"where it is 'unknown' (a file or array); {launch.DEFAULT_UNKNOWN_K_SELECTOR} where seeds "
                      "keep different numbers of clusters)",
                      flag_values=fv)


def parse_selection_flags(prog: str, define, argv, doc: str) -> flags.FlagValues:
    """The flags (`cli.parse`), with a plain error for a workdir without a run
    or a missing assessor file."""
    args = cli.parse(prog, define, argv, doc=doc, required=("workdir",))
    if not (Path(args.workdir) / "config.json").exists():
        cli.fail(prog, f"{args.workdir} holds no run (no config.json): pass the --workdir that dcjax train wrote")
    if args.assessor and not Path(args.assessor).exists():
        cli.fail(prog, f"assessor file {args.assessor} not found")
    logging.getLogger("absl").setLevel(logging.ERROR)
    return args


def define_flags(fv: flags.FlagValues) -> None:
    define_selection_flags(fv)
    flags.DEFINE_bool("progress", False, "progress bar while scoring new epochs", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m dcjax.select"):
    """`dcjax select`: `argv` without the program name (default: sys.argv[1:])."""
    args = parse_selection_flags(prog, define_flags, argv, __doc__)
    with one_line_errors(prog):
        return _select(args)


# What reading a run can meet that is the run's state, not a bug: said in one line, exit status 2.
READING_ERRORS = (run_lib.RunReadError, PermissionError)


@contextlib.contextmanager
def one_line_errors(prog: str):
    try:
        yield
    except READING_ERRORS as e:
        cli.fail(prog, e)


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
