"""What UNSEEN costs on top of its base algorithm: seconds per seed-epoch of
the clustering phase, side by side in one process.

    python experiments/unseen_overhead.py --dataset usps --epochs 8 [--seeds 1]

For each of DCN, DEC, DKM it builds the compiled clustering epoch of the base
algorithm with the data set's k (10), of the base algorithm with k_init = 35
centers, and of UNSEEN around it (k_init = 35), starts all three from the same
autoencoder (a short pretraining: what is timed does not depend on how good
the embedding is) and then times their epochs in turn, base, base at 35,
UNSEEN, base, ..., so that other jobs on the machine slow all three alike.
The first epoch of each (compilation) is left out; the median is reported.
The paper reports +7% (DCN), +53% (DEC), +42% (DKM) for UNSEEN over the base.
Results: experiments/results/unseen_overhead.md.
"""
import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import config as config_lib, data, train

RESULTS = Path(__file__).parent / "results"
PAPER = {"dcn": 7, "dec": 53, "dkm": 42}


def timed_epochs(trainers: dict, states: dict, x, epochs: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved times of `epochs` clustering epochs of every trainer: wall
    seconds, and CPU seconds of this process (all its threads). On a machine
    that other jobs share, wall time swings with their load; the CPU time
    counts the work done, so it is the steadier measure of a difference."""
    times = {name: {"wall": [], "cpu": []} for name in trainers}
    for _ in range(epochs + 1):   # + 1: the first one compiles
        for name, trainer in trainers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            states[name], out = trainer.cluster_epoch(states[name], x)
            jax.block_until_ready(out["assignments"])
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
    return {name: {kind: t[1:] for kind, t in kinds.items()} for name, kinds in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "unseen_overhead.md"))
    args = ap.parse_args()
    rows, load_before = [], os.getloadavg()[0]
    for algorithm in ("dcn", "dec", "dkm"):
        configs = {"base": config_lib.make_config(algorithm, args.dataset),
                   "base, 35 centers": config_lib.make_config(algorithm, args.dataset),
                   "UNSEEN": config_lib.make_config(f"unseen_{algorithm}", args.dataset)}
        configs["base, 35 centers"].dataset.n_clusters = 35
        for c in configs.values():
            c.seeds, c.pretrain.epochs = args.seeds, args.pretrain_epochs
        ds = data.load_dataset(configs["base"].dataset)
        x, keys = jnp.asarray(ds.x), train.seed_keys(configs["base"])
        trainers = {name: train.make_train(c, *ds.x.shape, int(c.dataset.n_clusters) or ds.n_clusters)
                    for name, c in configs.items()}
        pstate = trainers["base"].init_pretrain(keys)
        for _ in range(args.pretrain_epochs):
            pstate, _ = trainers["base"].pretrain_epoch(pstate, x)
        states = {name: t.init_clustering(pstate["params"], keys, x)[0] for name, t in trainers.items()}
        times = timed_epochs(trainers, states, x, args.epochs)
        median = {kind: {name: float(np.median(t[kind])) / args.seeds for name, t in times.items()}
                  for kind in ("wall", "cpu")}
        rows.append((algorithm, median))
        print(algorithm, {kind: {k: round(v, 3) for k, v in m.items()} for kind, m in median.items()}, flush=True)
    lines = ["# UNSEEN's overhead over its base algorithm (clustering phase)", "",
             f"Command: `python experiments/unseen_overhead.py --dataset {args.dataset} --epochs {args.epochs} "
             f"--seeds {args.seeds}`", "",
             f"Seconds per seed-epoch, median of {args.epochs} epochs after the first (compilation), the three "
             f"programs timed in turn in one process on {args.dataset} ({os.cpu_count()} CPU cores, JAX "
             f"{jax.__version__} on {jax.default_backend()}; other jobs may share the machine, which slows "
             f"the three alike; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after). "
             "'base, 35 centers': the base algorithm with UNSEEN's k_init centers and "
             "nothing else, which splits UNSEEN's cost into more centers and the rest (the nearest-neighbour "
             "loss, the end-of-epoch rule). Paper: UNSEEN's runtime over the base algorithm's.", "",
             "CPU seconds are those of this process, all its threads: the work, whatever the other jobs do. "
             "Overheads are read from them; wall seconds are shown too.", "",
             "| algorithm | measure | base (k = 10) | base, 35 centers | UNSEEN (k_init = 35) | UNSEEN over base | "
             "of which: 35 centers | paper |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for algorithm, median in rows:
        for kind in ("cpu", "wall"):
            m = median[kind]
            lines.append(f"| {algorithm} | {kind} s | {m['base']:.3f} | {m['base, 35 centers']:.3f} | "
                         f"{m['UNSEEN']:.3f} | {100 * (m['UNSEEN'] / m['base'] - 1):+.0f}% | "
                         f"{100 * (m['base, 35 centers'] / m['base'] - 1):+.0f}% | +{PAPER[algorithm]}% |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
