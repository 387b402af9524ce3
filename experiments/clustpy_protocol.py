"""ClustPy itself on our data files: the published protocol, final epoch,
through ClustPy's public API, next to dcjax's numbers and the published ones.

    bash experiments/setup_clustpy_env.sh                       # once
    python experiments/clustpy_protocol.py --dataset usps --first-seed 0 --seeds 3

Why: where dcjax misses a published cell (USPS), this separates "dcjax
differs from ClustPy" from "our data file differs from the paper's". Both
libraries get the same normalised array (`dcjax.data.load_dataset`); ClustPy
runs in its own venv (experiments/_clustpy_protocol_worker.py, one process
per seed, resumable per algorithm). Labels are scored here with
`dcjax.metrics`, as the protocol tables are.

Results accumulate by seed in experiments/results/clustpy_<dataset>.json (call
again with other seeds; finished seeds are skipped), and
experiments/results/clustpy_<dataset>.md is rewritten from it each time.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dcjax import config as config_lib, data, metrics
from protocol import ALGORITHMS, RESULTS, write_report
from reproduce import PUBLISHED_ACC, per_seed_results

HERE = Path(__file__).parent
DEFAULT_PYTHON = os.path.join(os.environ.get("CLUSTPY_VENV", "/work/venvs/clustpy"), "bin", "python")


def run_seed(args, x_path: Path, seed: int) -> Path:
    """ClustPy's protocol for one seed in its own venv; returns its result folder."""
    out = Path(args.runs) / args.dataset / f"seed{seed}"
    cmd = [args.clustpy_python, str(HERE / "_clustpy_protocol_worker.py"), "--data", str(x_path),
           "--out", str(out), "--seed", str(seed), "--n-clusters", str(args.n_clusters),
           "--threads", str(args.threads), "--pretrain-epochs", str(args.pretrain_epochs),
           "--clustering-epochs", str(args.clustering_epochs)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "worker.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out


def score_seed(out: Path, y: np.ndarray, k: int) -> dict:
    rows = {}
    for alg in ALGORITHMS:
        rows[alg] = {}
        for suffix, key in (("", "own"), ("_kmeans", "labels_")):
            scores = metrics.label_based_scores(y, np.load(out / f"{alg}{suffix}.npy"), k)
            rows[alg][key] = {name: float(v) for name, v in scores.items()}
        rows[alg]["seconds"] = json.loads((out / f"{alg}.json").read_text())["seconds"]
    pre = out / "pretrain.json"
    rows["pretrain_seconds"] = json.loads(pre.read_text())["seconds"] if pre.exists() else None
    return rows


def mean_sd(values) -> tuple[float, float]:
    v = 100 * np.asarray(values, float)
    return float(v.mean()), float(v.std())


def write_table(dataset: str, results: dict, meta: dict):
    seeds = sorted(int(s) for s in results)
    ours = per_seed_results(dataset)
    lines = [f"# ClustPy on our {dataset} file: the published protocol, final epoch", "",
             f"Command: `python experiments/clustpy_protocol.py --dataset {dataset} --first-seed S --seeds N` "
             f"(seeds merged from `clustpy_{dataset}.json`; per-seed wall times there).", "",
             f"ClustPy {meta['clustpy']} (torch {meta['torch']}, CPU) through its public API: "
             "FeedforwardAutoencoder [d, 500, 500, 2000, 10] with ReLU pretrained "
             f"{meta['pretrain_epochs']} epochs (Adam 1e-3, batch 256, MSE) once per seed; from copies of it "
             "AE+k-means (scikit-learn KMeans, n_init=10), DEC, IDEC (0.1 · KL + MSE), DCN (0.05 · k-means loss + "
             f"MSE) and DKM (α = 1000, 1 · loss + MSE), {meta['clustering_epochs']} epochs with Adam 1e-4, "
             "everything else ClustPy's defaults. The input is the array dcjax trains on "
             "(`dcjax.data.load_dataset`, z-normalised as the protocol says). ACC/NMI/ARI in %, mean ± sd "
             "(ddof=0) over seeds, scored with `dcjax.metrics`. dcjax: `experiments/results/reproduction.md`'s "
             "runs, all their seeds. Published: the UNSEEN paper's ClustPy-based Table I (brief).", "",
             f"Seeds: {', '.join(map(str, seeds))}.", "",
             "Two labelings on each side. *Own*: the algorithm's final assignment (ClustPy's `dec_labels_`, "
             "`dcn_labels_`, `dkm_labels_`; for AE+k-means, KMeans with n_init=10), what dcjax's tables report. "
             "*Re-clustered*: a k-means on the final embedding; ClustPy's `labels_` runs scikit-learn's KMeans with "
             "default parameters (one k-means++ start since scikit-learn 1.4; for AE+k-means the same call on the "
             "pretrained embedding), dcjax's `kmeans_on_embedding` uses 10 starts.", "",
             "| algorithm | ClustPy own ACC | dcjax own ACC | dcjax − ClustPy | ClustPy `labels_` ACC | "
             "dcjax re-clustered ACC | published ACC | ClustPy own − published | ClustPy `labels_` − published | "
             "ClustPy own NMI | dcjax own NMI | ClustPy own ARI | dcjax own ARI | ClustPy s / seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(ms):
        return "–" if ms is None else f"{ms[0]:.1f} ± {ms[1]:.1f}"

    def gap(a, b):
        return "–" if a is None or b is None else f"{a - b:+.1f}"

    for alg in ALGORITHMS:
        cp = {m: mean_sd([results[str(s)][alg]["own"][m] for s in seeds]) for m in ("acc", "nmi", "ari")}
        cp_km = mean_sd([results[str(s)][alg]["labels_"]["acc"] for s in seeds])
        mine_rows = list(ours.get(alg, {}).values())
        mine = {m: mean_sd([r["algorithm"][m] for r in mine_rows]) if mine_rows else None
                for m in ("acc", "nmi", "ari")}
        mine_km = mean_sd([r["kmeans_on_embedding"]["acc"] for r in mine_rows]) if mine_rows else None
        pub = PUBLISHED_ACC.get(dataset, {}).get(alg)
        secs = np.median([results[str(s)][alg]["seconds"] for s in seeds])
        lines.append(f"| {alg} | {f(cp['acc'])} | {f(mine['acc'])} ({len(mine_rows)} seeds) | "
                     f"{gap(mine['acc'][0] if mine['acc'] else None, cp['acc'][0])} | {f(cp_km)} | {f(mine_km)} | "
                     f"{pub if pub is not None else '–'} | {gap(cp['acc'][0], pub)} | {gap(cp_km[0], pub)} | "
                     f"{f(cp['nmi'])} | {f(mine['nmi'])} | {f(cp['ari'])} | {f(mine['ari'])} | {secs:.0f} |")
    pre = [results[str(s)]["pretrain_seconds"] for s in seeds if results[str(s)]["pretrain_seconds"]]
    if pre:
        lines += ["", f"ClustPy pretraining: {np.median(pre):.0f} s per seed (median; {meta['threads']} torch "
                      "threads on the 2-core machine, other jobs alongside at times)."]
    path = RESULTS / f"clustpy_{dataset}.md"
    write_report(path, lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int, default=100)
    ap.add_argument("--clustering-epochs", type=int, default=150)
    ap.add_argument("--subsample", type=int, default=0, help="rows (stratified); 0 = all (for a quick check)")
    ap.add_argument("--runs", default="runs/clustpy")
    ap.add_argument("--clustpy-python", default=DEFAULT_PYTHON)
    ap.add_argument("--results", default=None, help="JSON to accumulate into (default: results/clustpy_<dataset>.json)")
    args = ap.parse_args()

    cfg = config_lib.make_config("dec", args.dataset).dataset
    cfg.subsample = args.subsample
    dataset = data.load_dataset(cfg)
    args.n_clusters = dataset.n_clusters
    protocol = args.pretrain_epochs == 100 and args.clustering_epochs == 150 and args.subsample == 0
    if args.results is None and not protocol:
        raise SystemExit("a shortened run (epochs or --subsample) needs --results: it must not mix with the protocol's")
    results_path = Path(args.results) if args.results else RESULTS / f"clustpy_{args.dataset}.json"
    stored = json.loads(results_path.read_text()) if results_path.exists() else {"meta": {}, "seeds": {}}

    x_path = Path(args.runs) / args.dataset / "x.npy"
    x_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(x_path, np.ascontiguousarray(dataset.x, np.float32))
    versions = subprocess.run([args.clustpy_python, "-c", "import importlib.metadata as m; "
                               "print(m.version('clustpy'), m.version('torch'))"],
                              check=True, capture_output=True, text=True).stdout.split()
    meta = {"clustpy": versions[0], "torch": versions[1], "threads": args.threads,
            "pretrain_epochs": args.pretrain_epochs, "clustering_epochs": args.clustering_epochs,
            "subsample": args.subsample}
    if stored["meta"] and {k: stored["meta"][k] for k in ("pretrain_epochs", "clustering_epochs", "subsample")} != \
            {k: meta[k] for k in ("pretrain_epochs", "clustering_epochs", "subsample")}:
        raise SystemExit(f"{results_path} holds runs with other settings: {stored['meta']}")
    stored["meta"] = meta
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if str(seed) in stored["seeds"]:
            continue
        t0 = time.time()
        out = run_seed(args, x_path, seed)
        row = score_seed(out, dataset.y, dataset.n_clusters)
        # Re-read before writing: another launch may have added its seeds meanwhile.
        if results_path.exists():
            stored["seeds"] = {**json.loads(results_path.read_text())["seeds"], **stored["seeds"]}
        stored["seeds"][str(seed)] = row
        results_path.write_text(json.dumps(stored, indent=2))
        accs = {a: round(100 * row[a]["own"]["acc"], 1) for a in ALGORITHMS}
        print(f"seed {seed}: {time.time() - t0:.0f} s, ACC {accs}", flush=True)
    if args.results is None:
        write_table(args.dataset, stored["seeds"], meta)
    else:
        print(json.dumps(stored["seeds"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
