"""What one vmapped epoch of S seeds costs, as XLA compiles it (issue 31, seed scaling).

    python experiments/profile_seed_scaling.py                     # USPS, 1 and 10 seeds: results/seed_scaling.md
    python experiments/profile_seed_scaling.py --trace /tmp/trace  # on a GPU: also a jax.profiler trace

For each number of seeds S and each phase (pretraining, DEC clustering),
the epoch function a launch runs (`Trainer.pretrain_epoch` /
`Trainer.cluster_epoch` under `seed_parallelism=vmap`) is lowered and
compiled for the default backend, and XLA's own analyses are read:
`cost_analysis()` (FLOPs, bytes accessed: the traffic to memory that a GPU
epoch of small matmuls is bound by; XLA counts a loop's body once, so these
are one training step plus the code outside the scan) and `memory_analysis()` (arguments,
outputs, temporaries). The ratio of S seeds to one says whether the compiled
program does S times the work (the floor) or more. With `--time` the same
epoch is also timed (bare, `block_until_ready` once at the end), and with
`--trace DIR` the S-seed epochs run under `jax.profiler.trace(DIR)` for
TensorBoard/Perfetto. Compile-only on a CPU costs seconds per program.
"""
import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dcjax import data, train  # noqa: E402
from dcjax.config import make_config  # noqa: E402


def analyse(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    out = {"flops": float(cost.get("flops", np.nan)), "bytes_accessed": float(cost.get("bytes accessed", np.nan))}
    if mem is not None:
        out |= {"argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
                "temp_bytes": int(mem.temp_size_in_bytes)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--method", default="dec")
    ap.add_argument("--seeds-list", default="1,10")
    ap.add_argument("--time", action="store_true", help="also time 5 bare epochs of each")
    ap.add_argument("--trace", default="", help="write a jax.profiler trace of the largest S's epochs here")
    ap.add_argument("--output", default=str(ROOT / "experiments" / "results" / "seed_scaling.md"))
    args = ap.parse_args(argv)
    config = make_config(args.method, args.dataset)
    dataset = data.load_dataset(config.dataset)
    x = jnp.asarray(np.asarray(dataset.x, np.float32))
    n, d = x.shape
    k = dataset.n_clusters
    rows = []
    for seeds in [int(s) for s in args.seeds_list.split(",")]:
        config.seeds, config.seed_parallelism, config.progress = seeds, "vmap", False
        trainer = train.make_train(config, n, d, k)
        keys = train.seed_keys(config)
        pstate = trainer.init_pretrain(keys)
        cstate, _ = trainer.init_clustering(pstate["params"], keys, x)
        for phase, fn, state in (("pretrain", trainer.pretrain_epoch, pstate),
                                 (args.method, trainer.cluster_epoch, cstate)):
            t0 = time.perf_counter()
            compiled = fn.lower(state, x).compile()
            row = {"seeds": seeds, "phase": phase, "compile_s": round(time.perf_counter() - t0, 2), **analyse(compiled)}
            if args.time or args.trace:
                jax.block_until_ready(fn(state, x))
                t0 = time.perf_counter()
                s = state
                for _ in range(5):
                    s, out = fn(s, x)
                jax.block_until_ready((s, out))
                row["seconds_per_epoch"] = (time.perf_counter() - t0) / 5
            rows.append(row)
            print(row, flush=True)
        if args.trace and seeds == max(int(s) for s in args.seeds_list.split(",")):
            with jax.profiler.trace(args.trace):
                s = cstate
                for _ in range(3):
                    s, out = trainer.cluster_epoch(s, x)
                jax.block_until_ready((s, out))
    one = {r["phase"]: r for r in rows if r["seeds"] == 1}
    lines = [f"# One vmapped epoch of S seeds, as XLA compiles it ({args.dataset}, {jax.default_backend()})", "",
             f"Written by `python experiments/profile_seed_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"on {date.today()} ({jax.devices()[0].device_kind}). XLA's cost analysis of the compiled epoch; "
             "ratios are S seeds ÷ 1 seed (S is the floor: S times the work). XLA counts the body of a loop once: "
             "the columns are one step of the scan over batches plus the epoch's code outside it (the snapshot), "
             "not the whole epoch.", "",
             "| seeds | phase | GFLOP | GB accessed | temporaries MB | FLOPs ÷ 1 seed | bytes ÷ 1 seed | temporaries ÷ 1 seed"
             + (" | s/epoch | time ÷ 1 seed" if any("seconds_per_epoch" in r for r in rows) else "") + " |",
             "| --- | --- | --- | --- | --- | --- | --- | ---" + (" | --- | ---" if any("seconds_per_epoch" in r for r in rows) else "") + " |"]
    for r in rows:
        base = one.get(r["phase"], r)
        cells = [r["seeds"], r["phase"], f"{r['flops'] / 1e9:.1f}", f"{r['bytes_accessed'] / 1e9:.2f}",
                 f"{r.get('temp_bytes', 0) / 1e6:.0f}", f"{r['flops'] / base['flops']:.2f}",
                 f"{r['bytes_accessed'] / base['bytes_accessed']:.2f}",
                 f"{r.get('temp_bytes', 0) / max(base.get('temp_bytes', 1), 1):.2f}"]
        if "seconds_per_epoch" in r:
            cells += [f"{r['seconds_per_epoch']:.4f}", f"{r['seconds_per_epoch'] / base['seconds_per_epoch']:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
