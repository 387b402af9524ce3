"""CPU cost of one epoch's checkpoint, joint vs split vs the default replay
layout (the numbers behind the 'What a run writes' section of README.md).

    python experiments/probe_save_cost.py [--epochs 20] [--dataset usps]

Saves the same USPS DEC clustering state and snapshot (1 seed) `--epochs`
times through `checkpointing.PhaseCheckpoints`, idle 0.4 s between saves as
if an epoch were running, and reports the process CPU time per save (the
calling thread plus orbax's writer threads, which compete with XLA for the
cores) and the time the call itself blocks. No resume points are written.
Joint: every epoch kept, state and snapshot in one orbax item. Split: a
retention setting that prunes nothing, state and snapshot as two items.
Replay (the default): the snapshot alone.
"""
import argparse
import resource
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from dcjax import checkpointing, data, train
from dcjax.config import make_config


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(state, snapshot, epochs: int, **retention) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = checkpointing.PhaseCheckpoints(Path(tmp), "clustering", resume_every=10 ** 9, **retention)
        ckpts.save(0, state, snapshot, None)     # warm-up, untimed
        ckpts.wait()
        cpu0, blocked = cpu_seconds(), 0.0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            ckpts.save(epoch, state, snapshot, {"epoch": epoch})
            blocked += time.perf_counter() - t0
            time.sleep(0.4)
        ckpts.wait()
        cpu = cpu_seconds() - cpu0
        ckpts.close()
    return cpu / epochs, blocked / epochs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--dataset", default="usps")
    args = ap.parse_args()
    config = make_config("dec", args.dataset)
    dataset = data.load_dataset(config.dataset)
    x = jnp.asarray(dataset.x)
    trainer = train.make_train(config, *x.shape, dataset.n_clusters)
    keys = train.seed_keys(config)
    state, snapshot = trainer.init_clustering(trainer.init_pretrain(keys)["params"], keys, x)
    jax.block_until_ready((state, snapshot))
    joint, split, replay = {"model_states": "every_epoch"}, {"max_to_keep": 10 ** 6}, {}
    for layout, retention in (("joint", joint), ("split", split), ("replay (snapshot only)", replay),
                              ("joint", joint), ("split", split), ("replay (snapshot only)", replay)):
        cpu, blocked = measure(state, snapshot, args.epochs, **retention)
        print(f"{layout}: {cpu:.4f} s CPU per epoch's save, {blocked:.4f} s blocking the caller", flush=True)


if __name__ == "__main__":
    main()
