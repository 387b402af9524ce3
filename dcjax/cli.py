"""The `dcjax` command: one entry point, one flag style.

    dcjax train --config dkm --config.dataset.name=wine.csv --config.dataset.n_clusters=3
    dcjax train --config dkm --show-config          # the config's fields and their values, no training
    dcjax select --workdir runs/dkm_wine            # the epoch per seed and the launch's choice, without labels
    dcjax report --workdir runs/dkm_wine            # report.html
    dcjax evaluate --workdir runs/dkm_wine          # scores.csv: every epoch's label-free scores

Every subcommand parses absl flags (`--name=value`, `--flag`/`--noflag`);
`train` takes its settings as ml_collections config fields
(`--config.seeds=5`). A hyphen may stand for an underscore in a flag's name
(`--show-config`, `--launch-selector`), and `--no-flag` for `--noflag`.
`dcjax <command> --help` lists a command's flags. The modules run on their
own too: `python -m dcjax.main` is `dcjax train`, `python -m dcjax.select`
is `dcjax select`, and so on.

No flag is defined at import: each command defines its flags on a
`FlagValues` of its own when it runs (`parse`), so the commands can share a
process (a test, a notebook) without clashing.

This module imports no other dcjax module at its top: a subcommand's module
is imported by name when it runs, so `dcjax --help` is instant and the
import graph has no circle through here.
"""
import importlib
import inspect
import sys
from typing import Callable

from absl import flags

# command -> (module with main(argv, prog), one line of help)
COMMANDS = {
    "train": ("dcjax.main", "train on a data set, every seed of the launch in one program (python -m dcjax.main)"),
    "select": ("dcjax.select", "choose each seed's epoch and the launch's seed without labels (writes selection.json)"),
    "report": ("dcjax.report", "one HTML page about a run (report.html), opens offline"),
    "evaluate": ("dcjax.evaluate", "score every candidate epoch of a run without labels (writes scores.csv)"),
    "explain": ("dcjax.explain", "what each chosen cluster means, from tags (Deep Descriptive Clustering)"),
}
HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "-?")


def usage() -> str:
    from dcjax import __version__
    width = max(map(len, COMMANDS))
    lines = [f"dcjax {__version__}: deep clustering in JAX.", "",
             "usage: dcjax <command> [--flag=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "dcjax <command> --help lists a command's flags. Examples:",
              "  dcjax train --config dkm --show-config",
              "  dcjax train --config dkm --config.dataset.name=wine.csv --config.dataset.n_clusters=3",
              "  dcjax select --workdir runs/dkm_wine"]
    return "\n".join(lines)


def fail(prog: str, message) -> None:
    """A user's mistake: one line on stderr, exit status 2 (as argparse), no traceback."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    print(f"{prog}: error: {lines[-1] if lines else message}", file=sys.stderr)
    sys.exit(2)


def normalize(argv: list[str], fv: flags.FlagValues) -> list[str]:
    """`--show-config` -> `--show_config`, `--no-umap` -> `--noumap`: one
    spelling for absl, either for the user. Config fields (`--config.x`) and
    values are left alone."""
    out = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith("--config.") and "-" in arg[2:].split("=", 1)[0]:
            name, eq, value = arg[2:].partition("=")
            name = name.replace("-", "_")
            if name.startswith("no_") and name not in fv and name[3:] in fv and fv[name[3:]].boolean:
                name = "no" + name[3:]
            arg = f"--{name}{eq}{value}"
        out.append(arg)
    return out


def help_text(prog: str, doc: str, fv: flags.FlagValues) -> str:
    body = fv.get_help(prefix="  ", include_special_flags=False)
    body = "\n".join(line for line in body.splitlines() if not line.strip().endswith(":") or line.startswith("  "))
    return f"usage: {prog} [--flag=value ...]\n\n{doc.strip()}\n\nflags:\n{body}"


def parse(prog: str, define: Callable[[flags.FlagValues], None], argv: list[str] | None,
          doc: str = "", required: tuple[str, ...] = (),
          prepare: Callable[[list[str]], list[str]] | None = None) -> flags.FlagValues:
    """Parse `argv` (without the program name) into flags of their own.

    `define(fv)` defines the command's flags on a fresh `FlagValues`;
    `required` names flags that must be given; `prepare`, if given, rewrites
    the arguments after normalising (`train` resolves config names there).
    `--help` prints the flags and exits 0; a mistake is one line and exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    fv = flags.FlagValues()
    define(fv)
    if any(arg in HELP_ARGS for arg in argv):
        print(help_text(prog, doc, fv))
        sys.exit(0)
    argv = normalize(argv, fv)
    if prepare is not None:
        argv = prepare(argv)
    try:
        rest = fv([prog, *argv])
    except flags.Error as e:
        fail(prog, e)
    if len(rest) > 1:
        fail(prog, f"unexpected arguments {rest[1:]}; flags are --name=value")
    for name in required:
        if fv[name].value is None:
            fail(prog, f"--{name} is required")
    _quiet_absl()
    return fv


def _quiet_absl() -> None:
    """absl logs 'Logging before flag parsing goes to stderr' unless its own
    FLAGS are parsed; ours live apart, so mark those as parsed."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def run(argv: list[str] | None = None) -> int:
    """The `dcjax` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in (*HELP_ARGS, "help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "version"):
        from dcjax import __version__
        print(f"dcjax {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        fail("dcjax", f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} (dcjax --help)")
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        fail("dcjax", f"'{command}' needs {module_name}, which this version of dcjax does not have")
    # Every main takes the arguments without the program name; those of this
    # package also take `prog`, the name their messages start with.
    takes_prog = "prog" in inspect.signature(module.main).parameters
    result = module.main(argv[1:], **({"prog": f"dcjax {command}"} if takes_prog else {}))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(run())
