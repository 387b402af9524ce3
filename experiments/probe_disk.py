"""What a run's checkpoints take on disk, what dcjax estimated before
training, and what restoring a pruned epoch costs (the numbers in README.md,
"What a run writes").

    python experiments/probe_disk.py --workdir runs/dec_digits [--replay clustering:149 pretrain:49]

Prints `du -sb` of the workdir and of each checkpoint folder; the estimate
`train_and_evaluate` logs before training (recomputed from the run's
config.json for a fresh workdir); and for each --replay phase:epoch, the wall
and CPU seconds of `checkpointing.load_state` (a replay when that epoch's
state is not stored), compilation and data loading included.
"""
import argparse
import logging
import resource
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from dcjax import checkpointing, data, train


def du(path: Path) -> int:
    return int(subprocess.check_output(["du", "-sb", str(path)]).split()[0])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def estimate(workdir: Path) -> dict[str, dict[str, int]]:
    """The pre-training estimate for the same config in an empty workdir."""
    config = checkpointing.load_config(workdir)
    dataset = data.load_dataset(config.dataset)
    return train.planned_disk(config, *dataset.x.shape, int(config.dataset.n_clusters) or dataset.n_clusters)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--replay", nargs="*", default=[], help="phase:epoch to restore with load_state")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    workdir = Path(args.workdir)
    print(f"du -sb {workdir}: {du(workdir):,} bytes")
    for path in sorted(p for p in workdir.glob("*/*") if p.exists()):
        print(f"  {path.relative_to(workdir)}: {du(path):,}")
    plans = estimate(workdir)
    total = sum(n for plan in plans.values() for n in plan.values())
    print(f"estimate before training: {total:,} bytes " + str({p: {k: f'{v:,}' for k, v in plan.items()}
                                                               for p, plan in plans.items()}))
    for item in args.replay:
        phase, epoch = item.split(":")
        stored = int(epoch) in checkpointing.list_epochs(workdir, phase, "state")
        t0, c0 = time.perf_counter(), cpu_seconds()
        state = checkpointing.load_state(workdir, int(epoch), phase)
        jax.block_until_ready(state)
        print(f"load_state {phase} epoch {epoch} ({'stored' if stored else 'replayed'}): "
              f"wall {time.perf_counter() - t0:.1f} s, CPU {cpu_seconds() - c0:.1f} s, "
              f"{sum(np.asarray(v).size for v in jax.tree.leaves(state)):,} numbers")


if __name__ == "__main__":
    main()
