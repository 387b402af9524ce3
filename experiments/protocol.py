"""Run the published protocol for every algorithm on one dataset, sharing one
pretraining per seed (AE+k-means run first, the others start from it), and
write the final-epoch mean ± sd table.

    python experiments/protocol.py --dataset usps --seeds 5 [--runs runs/protocol]

Each run resumes where it stopped, and finished runs (summary.json present)
are skipped: call it again after an interruption. Results go to
experiments/results/protocol_<dataset>.{json,md}.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from dcjax import checkpointing, config as config_lib, train

ALGORITHMS = ("ae_kmeans", "dec", "idec", "dcn", "dkm")
RESULTS = Path(__file__).parent / "results"
NOTES = "## Notes (hand-written)"


# Table cells shared by reproduce.py and unseen_reproduce.py (here, so neither imports the other).
def fmt(mean_and_sd: tuple[float, float]) -> str:
    return f"{mean_and_sd[0]:.1f} ± {mean_and_sd[1]:.1f}"


def verdict(acc: tuple[float, float], published: float | None) -> str:
    if published is None:
        return "no published value"
    gap = acc[0] - published
    return f"{'within' if abs(gap) <= acc[1] else 'outside'} 1 sd ({gap:+.1f})"


def write_report(path: Path, lines: list[str]):
    """Write a generated report, keeping its hand-written notes section (at the end) across re-runs."""
    old = path.read_text() if path.exists() else ""
    notes = "\n" + old[old.index(NOTES):] if NOTES in old else ""
    path.write_text("\n".join(lines) + "\n" + notes)
    print("\n".join(lines))


def seconds_per_seed_epoch(workdir: Path, phase: str, seeds: int):
    """Median wall time of an epoch divided by seeds; the first epoch (compile) is left out."""
    secs = [r["seconds"] for r in checkpointing.load_records(workdir, phase) if r["epoch"] >= 2]
    return float(np.median(secs)) / seeds if secs else None


def run_protocol(dataset: str, seeds: int, runs: str = "runs/protocol",
                 algorithms=ALGORITHMS, report_only: bool = False, first_seed: int = 0) -> dict:
    """Train (or resume) every algorithm on `dataset`; return {algorithm: summary}
    for the finished ones and write protocol_<dataset>.{json,md}."""
    out = {}
    # Seeds first_seed .. first_seed + seeds - 1; a later batch of seeds gets its own folder.
    tag = dataset if first_seed == 0 else f"{dataset}_s{first_seed}"
    base = Path(runs) / tag
    pre_dir = base / "ae_kmeans"
    for alg in algorithms:
        workdir = base / alg
        cfg = config_lib.make_config(alg, dataset)
        cfg.seeds, cfg.seed = seeds, first_seed
        cfg.progress = False
        cfg.checkpoint.max_to_keep, cfg.checkpoint.keep_period = 2, 50
        if alg != "ae_kmeans":
            cfg.pretrained_from = str(pre_dir)
        if not (workdir / "summary.json").exists():
            if report_only:
                continue
            t0 = time.time()
            train.train_and_evaluate(cfg, workdir)
            print(f"{dataset} {alg}: {time.time() - t0:.0f} s", flush=True)
        summary = json.loads((workdir / "summary.json").read_text())
        summary["seconds_per_seed_epoch"] = {
            "pretrain": seconds_per_seed_epoch(pre_dir, "pretrain", seeds),
            "clustering": seconds_per_seed_epoch(workdir, "clustering", seeds)}
        out[alg] = summary
        (RESULTS / f"protocol_{tag}.json").write_text(json.dumps(out, indent=2))
        write_table(dataset, seeds, out, first_seed)
    return out


def pm(summary: dict, label: str, metric: str) -> str:
    m, sd = summary[f"{label}_mean"][metric], summary[f"{label}_std"][metric]
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def write_table(dataset: str, seeds: int, out: dict, first_seed: int = 0):
    tag = dataset if first_seed == 0 else f"{dataset}_s{first_seed}"
    seed_text = f"{seeds} seeds" if first_seed == 0 else f"{seeds} seeds ({first_seed}..{first_seed + seeds - 1})"
    lines = [f"# Published protocol on {dataset}: final epoch, {seed_text}",
             "", "Mean ± sd over seeds, in %. ACC/NMI/ARI score the algorithm's own assignment; the "
             "k-means column re-clusters the final embedding, as ClustPy reports.",
             "", f"Command: `python experiments/protocol.py --dataset {dataset} --seeds {seeds}"
             + (f" --first-seed {first_seed}" if first_seed else "") + "`", "",
             "| algorithm | ACC | NMI | ARI | k-means on embedding ACC | s / seed-epoch (clustering) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for alg, s in out.items():
        t = s["seconds_per_seed_epoch"]["clustering"]
        lines.append(f"| {alg} | {pm(s, 'algorithm', 'acc')} | {pm(s, 'algorithm', 'nmi')} | "
                     f"{pm(s, 'algorithm', 'ari')} | {pm(s, 'kmeans_on_embedding', 'acc')} | "
                     f"{f'{t:.3f}' if t else '–'} |")
    pre = out.get("ae_kmeans", {}).get("seconds_per_seed_epoch", {}).get("pretrain")
    if pre:
        lines += ["", f"Pretraining: {pre:.3f} s per seed-epoch (median over epochs 2..100, {seeds} seeds "
                      "in one launch, 2-core CPU shared with other jobs while it ran)."]
    (RESULTS / f"protocol_{tag}.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (own folder if > 0)")
    ap.add_argument("--runs", default="runs/protocol")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--report-only", action="store_true",
                    help="write the tables from the finished runs, train nothing")
    args = ap.parse_args()
    run_protocol(args.dataset, args.seeds, args.runs, args.algorithms.split(","), args.report_only, args.first_seed)
    tag = args.dataset if args.first_seed == 0 else f"{args.dataset}_s{args.first_seed}"
    print((RESULTS / f"protocol_{tag}.md").read_text())


if __name__ == "__main__":
    main()
