"""Benchmark: how long `dcjax.evaluate` takes next to the training it scores.

    python experiments/bench_evaluate.py --workdir runs/protocol/digits/ae_kmeans \
        --workdir runs/protocol/digits/dec      # writes experiments/results/bench_evaluate.md

Each workdir is evaluated from scratch into a temporary table (the run itself
is only read), then once more on the finished table, which must score nothing.
Evaluation seconds per phase are the sums of the table's per-epoch
`eval_seconds` (compilation included in a phase's first epoch); the total is
the wall time of the call, loading data and config included. Training seconds
are the sums of `seconds` in the run's records.jsonl. A run started with
`pretrained_from` has no pretraining of its own: pass that run too.
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import jax

from dcjax import checkpointing, evaluate

RESULTS = Path(__file__).resolve().parent / "results"


def bench(workdir: Path, in_place: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        output = workdir / "scores.csv" if in_place else Path(tmp) / "scores.csv"
        t0 = time.perf_counter()
        table = evaluate.evaluate_run(workdir, output=output, progress=False, recompute=True)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = evaluate.evaluate_run(workdir, output=output, progress=False)
        rerun = time.perf_counter() - t0
    assert again.attrs["computed"] == 0
    per_epoch = table.drop_duplicates(["phase", "epoch"])
    trained = evaluate.training_seconds(workdir)
    phases = {p: {"epochs": int((per_epoch.phase == p).sum()),
                  "eval_s": float(per_epoch.eval_seconds[per_epoch.phase == p].sum()),
                  "train_s": trained[p]} for p in checkpointing.PHASES}
    config = checkpointing.load_config(workdir)
    return {"workdir": str(workdir), "seeds": int(config.seeds), "rows": len(table), "total_s": total,
            "rerun_s": rerun, "train_s": sum(trained.values()), "phases": phases,
            "pretrained_from": config.get("pretrained_from", "")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", action="append", required=True, help="a run to evaluate (repeatable)")
    ap.add_argument("--out", default=str(RESULTS / "bench_evaluate.md"))
    ap.add_argument("--in-place", action="store_true",
                    help="score into the run's own scores.csv (from scratch), so later tools reuse it")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    results = [bench(Path(w), args.in_place) for w in args.workdir]
    load_after = os.getloadavg()[0]

    command = "python experiments/bench_evaluate.py " + " ".join(f"--workdir {w}" for w in args.workdir)
    lines = ["# Evaluation time next to training time", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
             f"{jax.devices()[0].platform}. Evaluation from scratch into a fresh table; training seconds "
             "summed from records.jsonl (`seconds` per epoch, both phases). Load average "
             f"{load_before:.1f} before, {load_after:.1f} after (other jobs share the machine).", "",
             "| run | phase | epochs x seeds | evaluation s | training s |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        for phase, p in r["phases"].items():
            if p["epochs"] or p["train_s"]:
                lines.append(f"| {r['workdir']} | {phase} | {p['epochs']} x {r['seeds']} | "
                             f"{p['eval_s']:.1f} | {p['train_s']:.1f} |")
        lines.append(f"| {r['workdir']} | **whole call** | {r['rows']} rows | **{r['total_s']:.1f}** "
                     f"(re-run, nothing new: {r['rerun_s']:.1f}) | **{r['train_s']:.1f}** |")
    for r in results:
        if r["pretrained_from"] and not r["phases"]["pretrain"]["epochs"]:
            lines.append(f"\n{r['workdir']} starts from {r['pretrained_from']}'s pretraining: "
                         "its pretraining is evaluated (and timed) with that run.")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
