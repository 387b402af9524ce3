"""The training loop with its per-epoch outputs against the bare compiled epoch (issue 31).

    python experiments/bench_pipeline.py                       # USPS, CPU: the table in results/pipeline.md
    python experiments/bench_pipeline.py --seeds-list 1 --phases dec --epochs 10 --repeats 1   # a quick look

For each number of seeds and each phase, side by side in one process, on
the same compiled epoch function and the same starting state:

- **bare**: E epochs of the jitted epoch, dispatched back to back, one
  `block_until_ready` at the end: the device's time with nothing written;
- **before**: `train._run_phase` as it was before the background writer:
  the loop itself saves each epoch (one behind the dispatch), one orbax item
  per epoch's snapshot (`snapshots/`, the layout before blocks);
- **after**: `train._run_phase` as it runs now: a writer thread saves behind
  the loop, and the snapshots go to disk as one item per resume point
  (`snapshot_blocks/`);
- with `--parts`, the two changes alone (background writer with per-epoch
  items; blocks written inline).

Every pipeline variant writes what a run writes: records.jsonl, every epoch's
snapshot, the full state (optimiser included) at each resume point
(`checkpoint.resume_every`, 10) and waits for the last save. E is a
multiple of resume_every so each measurement holds whole blocks. The order
of the variants rotates between repetitions, so drifting load hits all.
Reported: seconds per epoch (median over repetitions), the ratio to bare
per repetition (min-median-max), and the stall: pipeline minus bare, per
epoch.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dcjax import checkpointing, data, train  # noqa: E402
import bench_vs_clustpy as bvc  # noqa: E402  (DcjaxSide: compiled trainers and their starting states)

RESULTS = ROOT / "experiments" / "results"
VARIANTS = {   # name: (background writer, snapshot blocks)
    "before": (False, False),
    "after": (True, True),
    "writer only": (True, False),
    "blocks only": (False, True),
}


def time_bare(side, phase: str, epochs: int) -> float:
    epoch_fn, state = side.epoch_fn(phase), side.start[phase]
    t0 = time.perf_counter()
    for _ in range(epochs):
        state, out = epoch_fn(state, side.x)
    jax.block_until_ready((state, out))
    return time.perf_counter() - t0


def time_pipeline(side, phase: str, epochs: int, scratch: Path, background: bool, blocks: bool) -> float:
    state = side.start[phase]
    cfg = side.trainers[phase].config.checkpoint
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        name = "pretrain" if phase == "pretrain" else "clustering"
        if not blocks:   # a phase folder with snapshots/ keeps the per-epoch layout (runs from before blocks)
            (Path(tmp) / name / "snapshots").mkdir(parents=True)
        ckpts = checkpointing.PhaseCheckpoints(Path(tmp), name, resume_every=int(cfg.resume_every))
        assert ckpts.layout == ("blocks" if blocks else "replay")
        done = int(np.asarray(state["epoch"]).reshape(-1)[0])
        t0 = time.perf_counter()
        train._run_phase(phase, ckpts, state, side.epoch_fn(phase), done + epochs, side.x, progress=False,
                         background=background)
        ckpts.wait()
        seconds = time.perf_counter() - t0
        ckpts.close()
    return seconds


def measure(side, phase: str, epochs: int, repeats: int, variants: list[str], scratch: Path) -> dict:
    side.prepare(phase)
    time_bare(side, phase, 1)
    for v in variants:   # warm-up: the writer's first save, orbax's first item
        time_pipeline(side, phase, int(side.trainers[phase].config.checkpoint.resume_every), scratch, *VARIANTS[v])
    out = {"bare": [], **{v: [] for v in variants}}
    order = ["bare", *variants]
    for rep in range(repeats):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            s = (time_bare(side, phase, epochs) if name == "bare"
                 else time_pipeline(side, phase, epochs, scratch, *VARIANTS[name]))
            out[name].append(s / epochs)
        print(f"  {phase} rep {rep}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in out.items()), flush=True)
    return out


def table(results: list[dict], variants: list[str]) -> str:
    """Rows that have every one of `variants`."""
    head = ("| seeds | phase | bare s/epoch | " + " | ".join(f"{v} s/epoch | {v} ÷ bare (min – median – max) | "
                                                          f"{v} stall s/epoch" for v in variants) + " |\n")
    head += "| --- | --- | --- | " + " | ".join("--- | --- | ---" for _ in variants) + " |\n"
    rows = []
    for r in results:
        if not all(v in r["times"] for v in variants):
            continue
        bare = np.asarray(r["times"]["bare"])
        cells = [str(r["seeds"]), r["phase"], f"{np.median(bare):.4f}"]
        for v in variants:
            t = np.asarray(r["times"][v])
            ratio = t / bare
            cells += [f"{np.median(t):.4f}", f"{ratio.min():.3f} – {np.median(ratio):.3f} – {ratio.max():.3f}",
                      f"{np.median(t - bare):+.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--seeds-list", default="1,10")
    ap.add_argument("--phases", default="pretrain,dec,dkm", help="phases for 1 seed")
    ap.add_argument("--phases-many", default="pretrain,dec", help="phases for more than 1 seed")
    ap.add_argument("--epochs", type=int, default=20, help="timed epochs per measurement (a multiple of 10)")
    ap.add_argument("--epochs-many", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-many", type=int, default=2)
    ap.add_argument("--parts", action="store_true", help="also the two changes alone (1 seed, --parts-phases)")
    ap.add_argument("--parts-phases", default="dec")
    ap.add_argument("--scratch", default=str(ROOT / "runs" / "bench_pipeline"))
    ap.add_argument("--output", default=str(RESULTS / "pipeline.md"))
    args = ap.parse_args(argv)
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    bench_args = bvc.parse_args(["--dataset", args.dataset, "--seed-parallelism", "vmap"])
    config = bvc.dcjax_config("dec", bench_args, 1)
    dataset = data.load_dataset(config.dataset)
    x = jnp.asarray(np.asarray(dataset.x, np.float32))
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    meta = {"date": str(date.today()), "dataset": args.dataset, "rows": int(x.shape[0]), "backend": jax.default_backend(),
            "devices": str(jax.devices()), **bvc.machine_info(), "command": "python " + " ".join(
                ["experiments/bench_pipeline.py", *(argv if argv is not None else sys.argv[1:])])}
    results, t_start = [], time.perf_counter()
    for seeds in [int(s) for s in args.seeds_list.split(",")]:
        side = bvc.DcjaxSide(x, k, bench_args, seeds=seeds, parallelism="vmap")
        many = seeds > 1
        phases = (args.phases_many if many else args.phases).split(",")
        for phase in phases:
            parts = args.parts and not many and phase in args.parts_phases.split(",")
            variants = ["before", "after"] + (["writer only", "blocks only"] if parts else [])
            print(f"{seeds} seed(s), {phase}", flush=True)
            times = measure(side, phase, args.epochs_many if many else args.epochs,
                            args.repeats_many if many else args.repeats, variants, scratch)
            results.append({"seeds": seeds, "phase": phase, "times": times})
            Path(args.output).with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    meta["seconds"] = round(time.perf_counter() - t_start)
    meta["load_end"] = os.getloadavg()[0]
    Path(args.output).with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    body = table(results, ["before", "after"])
    if any("writer only" in r["times"] for r in results):
        body += ("\nThe two changes alone (the background writer with one item per epoch; blocks written by the "
                 "loop itself):\n\n" + table(results, ["writer only", "blocks only"]))
    text = (f"# The loop with its per-epoch outputs against the bare epoch ({args.dataset}, "
            f"{meta['backend']})\n\nWritten by `{meta['command']}` on {meta['date']} ({meta['cpu']}, "
            f"{meta['cores']} cores, load {meta['load']:.2f} at the start, {meta['load_end']:.2f} at the end; "
            f"{meta['seconds']} s). See the script's docstring for what each column times.\n\n" + body)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
