"""Command line: `python -m dcjax.main --config configs/dkm_usps.py [--workdir runs/x]`.

Overrides: `--config.seeds=10 --config.clustering.epochs=20`; presets after a
colon: `--config configs/dec_digits.py:smoke`. Re-running with the workdir of
a killed run continues it.
"""
import logging as pylogging
import subprocess
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dcjax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints and records go (default: runs/<algorithm>_<dataset>).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (several hosts; the "
                  "coordinator comes from the environment, e.g. SLURM or JAX_COORDINATOR_ADDRESS).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.distributed:
        import jax
        jax.distributed.initialize()
    config = FLAGS.config
    workdir = FLAGS.workdir or f"runs/{config.algorithm}_{config.dataset.name}"
    # dcjax's own messages at INFO; orbax logs every save at INFO through absl,
    # which would bury the progress bar, so absl stays at WARNING.
    logging.set_verbosity(logging.WARNING)
    pylogging.getLogger("dcjax").setLevel(pylogging.INFO)
    summary = train.train_and_evaluate(config, workdir)
    print(train.format_summary(summary, __import__("pathlib").Path(workdir)))
    if config.get("report", False):
        # In a process of its own: dcjax.evaluate, which the report uses, defines
        # command-line flags ('workdir') that would clash with this module's.
        subprocess.run([sys.executable, "-m", "dcjax.report", "--workdir", workdir,
                        *([] if config.progress else ["--no-progress"])], check=True)


if __name__ == "__main__":
    app.run(main)
