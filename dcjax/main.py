"""Command line: `dcjax train --config dkm_usps [--workdir runs/x]`, also
`python -m dcjax.main --config dkm_usps` (the same flags; see `dcjax.cli`).

`--config` is a config name or a config file:
- a name, resolved inside the installed package, so it works from any
  folder: `default` (the default when --config is absent: DEC on digits),
  an algorithm (`dkm`: on digits, the start for your own data) or
  `<algorithm>_<dataset>` (`dkm_usps`), as `dcjax.config.config_from_name`;
- a file with `get_config(arg)`: the repository's `configs/dkm_usps.py`, or
  your own.
Presets after a colon: `--config dkm_usps:smoke,seeds=4`. Overrides:
`--config.seeds=10 --config.clustering.epochs=20`. Your own data:

    dcjax train --config dkm --config.dataset.name=data.csv --config.dataset.n_clusters=3
    dcjax train --config dkm --show-config      # the fields and their values; trains nothing

Re-running with the workdir of a killed run continues it. A mistake in the
settings or the data prints one line (what is wrong, what to do) and exits
with status 2, before any compute.
"""
import logging as pylogging
import re
import subprocess
import sys
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from dcjax import cli
from dcjax import config as config_lib
from dcjax import methods

NAMED_CONFIG_FILE = Path(__file__).resolve().with_name("named_config.py")
PROG = "python -m dcjax.main"


def define_flags(fv: flags.FlagValues) -> None:
    """The flags of `dcjax train`, on `fv` (none is defined at import)."""
    flags.DEFINE_string("workdir", None, "Where checkpoints and records go (default: runs/<algorithm>_<dataset>).",
                        flag_values=fv)
    flags.DEFINE_bool("show_config", False, "Print the config's fields and their values (after --config.* "
                      "overrides) and exit without training.", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "Several processes (hosts) train one launch, the seeds sharded over "
                      "all their devices: jax.distributed.initialize() first. The coordinator comes from the "
                      "cluster (SLURM, GKE) or JAX_COORDINATOR_ADDRESS, or from the three flags below.",
                      flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0.", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "With --distributed: how many processes.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "With --distributed: this process's index, 0 .. num_processes-1.",
                         flag_values=fv)
    # Without --config, ml_collections loads the default and applies the
    # --config.* overrides as it parses.
    config_flags.DEFINE_config_file(
        "config", f"{NAMED_CONFIG_FILE}:default", "A config name (default, dkm, dkm_usps, ...) or "
        "file (configs/dkm_usps.py), with presets after a colon; fields as --config.<field>=<value>.",
        flag_values=fv, lock_config=True)


def config_argument(value: str) -> str:
    """What ml_collections loads for `--config value`: a file as given, a
    name through the packaged file that resolves it. Checked here, so an
    unknown name, preset or file is one line, not a traceback."""
    target, _, presets = value.partition(":")
    if target.endswith(".py") or "/" in target:
        if not Path(target).is_file():
            raise config_lib.ConfigError(f"config file {target} not found; give a path to a .py file "
                                         "with get_config(), or a config name such as dkm_usps")
        return value
    config_lib.config_from_name(target, presets or None)
    return f"{NAMED_CONFIG_FILE}:{value}"


def resolve_config_names(argv: list[str]) -> list[str]:
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            argv[i + 1] = config_argument(argv[i + 1])
        elif arg.startswith(("--config=", "-config=")):
            option, value = arg.split("=", 1)
            argv[i] = f"{option}={config_argument(value)}"
    return argv


def parse_flags(argv: list[str] | None, prog: str = PROG) -> flags.FlagValues:
    """absl's flag parsing (`cli.parse`), with config names resolved and
    errors as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli.parse(prog, define_flags, argv, doc=__doc__, prepare=resolve_config_names)
    except (KeyError, AttributeError) as e:   # how ml_collections reports an unknown field
        cli.fail(prog, unknown_field_message(str(e), argv))
    except (config_lib.ConfigError, ValueError, TypeError) as e:   # a failing get_config() carries its traceback
        cli.fail(prog, e)


def unknown_field_message(error: str, argv: list[str]) -> str:
    """ml_collections' "'epoch' Did you mean "epochs"" as the override the user wrote."""
    key = re.search(r"'([^'\\]+)", error)
    hint = re.search(r'Did you mean "([^"]+)"', error)
    fields = [arg.split("=", 1)[0].split(".", 1)[1] for arg in argv if re.match(r"--?config\.", arg)]
    field = next((f for f in fields if key and key.group(1) in f.split(".")), key.group(1) if key else "?")
    suggestion = f" (did you mean {field.rsplit('.', 1)[0] + '.' if '.' in field else ''}{hint.group(1)}?)" if hint else ""
    return f"unknown config field {field!r}{suggestion}; --show-config lists the fields"


def default_workdir(config) -> str:
    name = str(config.dataset.name)
    return f"runs/{methods.algorithm_label(config)}_{Path(name).stem if _is_file(name) else name}"


def _is_file(name: str) -> bool:
    return (name.lower().endswith((".csv", ".tsv", ".npy", ".npz", ".csv.gz", ".tsv.gz"))   # data.FILE_SUFFIXES
            and not name.startswith("tfds:"))


def main(argv: list[str] | None = None, prog: str = PROG):
    """Train: `argv` without the program name (default: sys.argv[1:])."""
    FLAGS = parse_flags(argv, prog)

    def fail(message):
        cli.fail(prog, message)
    config = FLAGS.config
    if FLAGS.show_config:   # the fields and their values, before any check or compute
        print(config)
        return 0
    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        fail(f"{e}; set it with --config.{e.field}=..." if e.field and "unknown" not in str(e) else e)
    if _is_file(str(config.dataset.name)):   # absolute, so the run can be read from any folder
        config.dataset.name = str(Path(config.dataset.name).expanduser().resolve())
    workdir = FLAGS.workdir or default_workdir(config)
    # dcjax's own messages at INFO; orbax logs every save at INFO through absl,
    # which would bury the progress bar, so absl stays at WARNING.
    logging.set_verbosity(logging.WARNING)
    pylogging.getLogger("dcjax").setLevel(pylogging.INFO)
    from dcjax import checkpointing, data, train   # after the checks above: a mistake there is reported at once
    if FLAGS.distributed:
        train.start_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        summary = train.train_and_evaluate(config, workdir)
    except (config_lib.ConfigError, data.DataError,   # raised before any compute
            train.WorkdirBusyError, PermissionError, checkpointing.DiskFullError) as e:   # and a full disk
        fail(e)
    import jax
    if jax.process_index() == 0:   # under --distributed, one process reports
        print(train.format_summary(summary, Path(workdir)))
        select = "dcjax select" if prog.startswith("dcjax") else "python -m dcjax.select"
        print(f"next, the best epoch without labels: {select} --workdir {workdir}")
        if config.get("report", False):
            # In a process of its own, so the report's memory is not added to training's.
            subprocess.run([sys.executable, "-m", "dcjax.report", "--workdir", workdir,
                            *([] if config.progress else ["--noprogress"])], check=True)


if __name__ == "__main__":
    sys.exit(main())
