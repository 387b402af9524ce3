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


def seconds_per_seed_epoch(workdir: Path, phase: str, seeds: int):
    """Median wall time of an epoch divided by seeds; the first epoch (compile) is left out."""
    secs = [r["seconds"] for r in checkpointing.load_records(workdir, phase) if r["epoch"] >= 2]
    return float(np.median(secs)) / seeds if secs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--runs", default="runs/protocol")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--report-only", action="store_true",
                    help="write the tables from the finished runs, train nothing")
    args = ap.parse_args()
    out = {}
    base = Path(args.runs) / args.dataset
    pre_dir = base / "ae_kmeans"
    for alg in args.algorithms.split(","):
        workdir = base / alg
        cfg = config_lib.make_config(alg, args.dataset)
        cfg.seeds = args.seeds
        cfg.progress = False
        cfg.checkpoint.max_to_keep, cfg.checkpoint.keep_period = 2, 50
        if alg != "ae_kmeans":
            cfg.pretrained_from = str(pre_dir)
        if not (workdir / "summary.json").exists():
            if args.report_only:
                continue
            t0 = time.time()
            train.train_and_evaluate(cfg, workdir)
            print(f"{args.dataset} {alg}: {time.time() - t0:.0f} s", flush=True)
        summary = json.loads((workdir / "summary.json").read_text())
        summary["seconds_per_seed_epoch"] = {
            "pretrain": seconds_per_seed_epoch(pre_dir, "pretrain", args.seeds),
            "clustering": seconds_per_seed_epoch(workdir, "clustering", args.seeds)}
        out[alg] = summary
        (RESULTS / f"protocol_{args.dataset}.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Published protocol on {args.dataset}: final epoch, {args.seeds} seeds",
             "", "Mean ± sd over seeds, in %. 'ACC' etc. score the algorithm's own assignment; the "
             "k-means column re-clusters the final embedding, as ClustPy reports.",
             "", f"Command: `python experiments/protocol.py --dataset {args.dataset} --seeds {args.seeds}`", "",
             "| algorithm | ACC | NMI | ARI | k-means on embedding ACC | s / seed-epoch (clustering) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for alg, s in out.items():
        m, sd = s["algorithm_mean"], s["algorithm_std"]
        km, kmsd = s["kmeans_on_embedding_mean"], s["kmeans_on_embedding_std"]
        t = s["seconds_per_seed_epoch"]["clustering"]
        lines.append(f"| {alg} | {100*m['acc']:.1f} ± {100*sd['acc']:.1f} | {100*m['nmi']:.1f} ± {100*sd['nmi']:.1f} "
                     f"| {100*m['ari']:.1f} ± {100*sd['ari']:.1f} | {100*km['acc']:.1f} ± {100*kmsd['acc']:.1f} "
                     f"| {t:.3f} |" if t else f"| {alg} | {100*m['acc']:.1f} ± {100*sd['acc']:.1f} | "
                     f"{100*m['nmi']:.1f} ± {100*sd['nmi']:.1f} | {100*m['ari']:.1f} ± {100*sd['ari']:.1f} | "
                     f"{100*km['acc']:.1f} ± {100*kmsd['acc']:.1f} | – |")
    pre = out.get("ae_kmeans", {}).get("seconds_per_seed_epoch", {}).get("pretrain")
    if pre:
        lines += ["", f"Pretraining: {pre:.3f} s per seed-epoch (median over epochs 2..100, {args.seeds} seeds "
                      "vmapped in one launch, 2-core CPU)."]
    (RESULTS / f"protocol_{args.dataset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
