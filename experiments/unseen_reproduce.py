"""UNSEEN (Leiber et al., 2024) against the paper: Table I, RQ2 (synthetic
data), RQ3 (no nearest-neighbour loss), and the reference code's behaviour.

    python experiments/unseen_reproduce.py --train optdigits:0:5     # one chunk: data set, first seed, seeds
    python experiments/unseen_reproduce.py --queue                   # every chunk not done yet, in order
    python experiments/unseen_reproduce.py                           # the reports, from the committed JSON

A chunk is one data set and a batch of seeds. AE+k-means pretrains once per
seed (`<runs>/<data set>_s<first>/ae_kmeans`), as experiments/protocol.py
does, and every variant below starts from that autoencoder
(`pretrained_from`). A finished run (summary.json) is skipped and a killed
one resumes, so the queue can be stopped and started again at any time.
Each chunk's per-seed results go to
experiments/results/unseen/<data set>_s<first>.json, committed; the reports
are built from those files alone:
- experiments/results/unseen.md: everything below, with the per-variant
  timing and the RQ2 figure (unseen_rq2.png);
- the Table I section of experiments/results/reproduction.md
  (experiments/reproduce.py calls `table_one`).

Variants: 'unseen_dcn', 'unseen_dec', 'unseen_dkm' (the paper's settings:
k_init = 35, t = 0.5); '<variant>_nonn' without the nearest-neighbour loss
(RQ3, the paper's Table II); '<variant>_ref' with `unseen.reference_code`
(what the public code does: DEC/DKM centers frozen after the first removal,
DCN's counts not pruned). Data sets: the real ones by name, and 'blobs_k<K>':
scikit-learn's make_blobs with N = 10,000, d = 100, std 1, K equal clusters
and random_state 1, as the reference code's RQ2 experiment.
Normalisation: dcjax's defaults, which are the reference code's: one global
mean and std for the image sets (Optdigits, USPS, MNIST, Fashion-MNIST), per
feature for Pendigits and the blobs.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from dcjax import config as config_lib, train
from protocol import RESULTS, fmt, seconds_per_seed_epoch, verdict, write_report

OUT = RESULTS / "unseen"
PAPER = ("unseen_dcn", "unseen_dec", "unseen_dkm")
NO_NN = tuple(f"{v}_nonn" for v in PAPER)
REFERENCE = tuple(f"{v}_ref" for v in PAPER)
VARIANT_SETTINGS = {"": {}, "_nonn": {"nn_loss": False}, "_ref": {"reference_code": True}}
BLOB_KS = (5, 7, 10, 15, 20, 25, 30)
# Table I of the paper: ACC (%) of the k-means re-clustering of the final embedding, 10 runs.
PUBLISHED_ACC = {"usps": {"unseen_dcn": 77.5, "unseen_dec": 81.3, "unseen_dkm": 71.5},
                 "pendigits": {"unseen_dcn": 74.6, "unseen_dec": 81.2, "unseen_dkm": 78.3},
                 "optdigits": {"unseen_dcn": 81.3, "unseen_dec": 81.8, "unseen_dkm": 85.6}}
TABLE_ONE_DATASETS = ("optdigits", "usps", "pendigits", "mnist", "fmnist")
# The order of the queue: the issue's priorities (Table I, with the reference
# code's behaviour on the cheapest set early: whether Table I depends on it;
# RQ2; RQ3; more seeds of the rest).
QUEUE = ([("optdigits", 0, 5, PAPER), ("optdigits", 0, 5, REFERENCE), ("optdigits", 5, 5, PAPER)]
         + [(d, s, 5, PAPER) for d in ("usps", "pendigits") for s in (0, 5)]
         + [(f"blobs_k{k}", 0, 3, PAPER) for k in BLOB_KS]
         + [("optdigits", 0, 5, NO_NN), ("usps", 0, 5, NO_NN), ("usps", 0, 5, REFERENCE),
            ("optdigits", 5, 5, NO_NN), ("usps", 5, 5, NO_NN), ("optdigits", 5, 5, REFERENCE),
            ("usps", 5, 5, REFERENCE), ("pendigits", 0, 5, REFERENCE)])


def make_config(variant: str, dataset: str, first_seed: int, seeds: int, blob_epochs=None, preset: str = ""):
    """The run's config: AE+k-means (the shared pretraining) or an UNSEEN variant.
    `blob_epochs` (pretraining, clustering) shortens the synthetic runs (RQ2)
    where the CPU cannot afford the paper's 100 + 150; the report says so.
    `preset` ('public': the UNSEEN public code's set-up, dcjax.config.PUBLIC_SETUP)
    applies to the pretraining run too, so its autoencoder is the preset's."""
    suffix = next((x for x in VARIANT_SETTINGS if x and variant.endswith(x)), "")
    base = variant[:len(variant) - len(suffix)]
    name = "blobs" if dataset.startswith("blobs_k") else dataset
    cfg = config_lib.make_config(base, name, preset or None)
    if name == "blobs":
        cfg.dataset.update(n_samples=10_000, n_features=100, blob_clusters=int(dataset[len("blobs_k"):]),
                           cluster_std=1.0, blob_seed=1)
        if blob_epochs:
            cfg.pretrain.epochs = blob_epochs[0]
            if base != "ae_kmeans":   # AE+k-means has no clustering epochs
                cfg.clustering.epochs = blob_epochs[1]
    elif blob_epochs:
        raise ValueError("--blob-epochs shortens the synthetic runs only; Table I keeps 100 + 150 epochs")
    for key, value in VARIANT_SETTINGS[suffix].items():
        cfg.unseen[key] = value
    cfg.seed, cfg.seeds, cfg.progress = first_seed, seeds, False
    cfg.checkpoint.max_to_keep, cfg.checkpoint.keep_period = 2, 0
    if suffix or name == "blobs":   # not scored per epoch: half the snapshot size
        cfg.checkpoint.embedding_dtype = "float16"
    return cfg


def out_dir(preset: str = "") -> Path:
    """Where a chunk's JSON goes: OUT, or OUT/<preset> for a preset's runs."""
    return OUT / preset if preset else OUT


def chunk_path(dataset: str, first_seed: int, preset: str = "") -> Path:
    return out_dir(preset) / f"{dataset}_s{first_seed}.json"


def free_disk(workdir: Path):
    """Delete what a finished run no longer needs: its full training states
    for resuming, and the model states of its clustering epochs (about 80% of
    a run). The snapshots stay (the score tables read them), and so does the
    pretrained autoencoder that the variants start from (pretrain/state)."""
    import shutil
    for part in ("pretrain/resume", "clustering/resume", "clustering/state"):
        shutil.rmtree(workdir / part, ignore_errors=True)


def run_chunk(dataset: str, first_seed: int, seeds: int, variants, runs: str, blob_epochs=None,
              preset: str = "") -> dict:
    """Train (or resume) AE+k-means and `variants` on one batch of seeds;
    record each finished run's summary in the chunk's JSON as soon as it ends."""
    base = Path(runs) / (f"{dataset}_s{first_seed}" + (f"_{preset}" if preset else ""))
    path = chunk_path(dataset, first_seed, preset)
    out = json.loads(path.read_text()) if path.exists() else {}
    for variant in ("ae_kmeans", *variants):
        workdir = base / variant
        cfg = make_config(variant, dataset, first_seed, seeds, blob_epochs, preset)
        if variant != "ae_kmeans":
            cfg.pretrained_from = str(base / "ae_kmeans")
        if not (workdir / "summary.json").exists():
            t0 = time.time()
            train.train_and_evaluate(cfg, workdir)
            print(f"{dataset} seeds {first_seed}..{first_seed + seeds - 1} {variant}: {time.time() - t0:.0f} s",
                  flush=True)
        free_disk(workdir)
        summary = json.loads((workdir / "summary.json").read_text())
        summary["run"] = str(workdir)
        summary["epochs"] = {"pretrain": int(cfg.pretrain.epochs), "clustering": int(cfg.clustering.epochs)}
        summary["seconds_per_seed_epoch"] = {
            "pretrain": seconds_per_seed_epoch(base / "ae_kmeans", "pretrain",   # it may hold more seeds
                                               json.loads((base / "ae_kmeans" / "config.json").read_text())["seeds"]),
            "clustering": seconds_per_seed_epoch(workdir, "clustering", seeds)}
        out[variant] = summary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
    return out


def per_seed(dataset: str, preset: str = "") -> dict[str, dict[int, dict]]:
    """{variant: {seed: row}} over every chunk of `dataset` (of `preset`'s runs)."""
    rows: dict[str, dict[int, dict]] = {}
    for path in sorted(out_dir(preset).glob(f"{dataset}_s*.json")):
        for variant, summary in json.loads(path.read_text()).items():
            for row in summary["seeds"]:
                rows.setdefault(variant, {})[row["seed"]] = row
    return rows


def stats(rows: list[dict], label: str, metric: str, scale: float = 100.0) -> tuple[float, float]:
    values = scale * np.array([r[label][metric] if label else r[metric] for r in rows], np.float64)
    return float(values.mean()), float(values.std())


def seconds(dataset: str, variant: str):
    """Median clustering seconds per seed-epoch over the chunks of a variant."""
    values = [c["seconds_per_seed_epoch"]["clustering"] for c in summaries(dataset, variant)]
    values = [v for v in values if v]
    return float(np.median(values)) if values else None


def table_one(datasets=TABLE_ONE_DATASETS, variants=PAPER) -> list[str]:
    """Table I's UNSEEN columns: final epoch, k-means with the surviving number
    of clusters on the final embedding (what the paper reports), the method's
    own assignment apart, and the final number of clusters."""
    lines = ["| dataset | variant | seeds | ACC (k-means on embedding) | published ACC | verdict | NMI | ARI | "
             "final number of clusters | own assignment: ACC / NMI / ARI |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dataset in datasets:
        results = per_seed(dataset)
        for variant in variants:
            published = PUBLISHED_ACC.get(dataset, {}).get(variant)
            rows = [results[variant][s] for s in sorted(results.get(variant, {}))]
            if not rows:
                lines.append(f"| {dataset} | {variant} | 0 | not run (compute) | {published or '–'} | – | – | – | – | – |")
                continue
            acc = stats(rows, "kmeans_on_embedding", "acc")
            own = " / ".join(fmt(stats(rows, "algorithm", m)) for m in ("acc", "nmi", "ari"))
            lines.append(
                f"| {dataset} | {variant} | {len(rows)}{'' if len(rows) >= 10 else ' (of 10)'} | {fmt(acc)} | "
                f"{published or '–'} | {verdict(acc, published)} | "
                f"{fmt(stats(rows, 'kmeans_on_embedding', 'nmi'))} | {fmt(stats(rows, 'kmeans_on_embedding', 'ari'))} | "
                f"{fmt(stats(rows, None, 'n_clusters', 1.0))} | {own} |")
    return lines


PUBLIC_CODE = RESULTS / "unseen_public_code"


def public_code_rows(dataset: str, variant: str) -> list[dict]:
    """The public code itself on our file (experiments/unseen_public_code.py):
    {seed, acc, n_clusters} per seed, from unseen_public_code/<dataset>_<base>_s<seed>.json
    (two JSON layouts: the first runs wrote a flat one)."""
    rows = []
    for path in sorted(PUBLIC_CODE.glob(f"{dataset}_{variant[len('unseen_'):]}_s*.json")):
        r = json.loads(path.read_text())
        acc = r["kmeans_on_embedding"]["acc"] if "kmeans_on_embedding" in r else r["acc"]
        rows.append({"seed": int(r["seed"]), "acc": float(acc), "n_clusters": int(r["n_clusters"])})
    return sorted(rows, key=lambda r: r["seed"])


def per_seed_text(rows: list[dict], key=lambda r: r["n_clusters"]) -> str:
    return " ".join(str(key(r)) for r in rows) if rows else "–"


def public_table(datasets=("optdigits", "usps", "pendigits"), variants=PAPER, preset: str = "public") -> list[str]:
    """Table I's cells three ways: this repository's protocol (today's
    table), dcjax under the `:public` preset (the public code's set-up), and
    the public code itself on the same files; with the clusters each seed kept."""
    lines = ["| dataset | variant | published ACC | protocol: seeds | ACC | clusters | `:public` preset: seeds | "
             "ACC | verdict | clusters | clusters per seed (seed 0, 1, ...) | public code: seeds | ACC | "
             "clusters per seed | ACC per seed |", "| --- " * 15 + "|"]
    for dataset in datasets:
        ours, public = per_seed(dataset), per_seed(dataset, preset)
        for variant in variants:
            published = PUBLISHED_ACC.get(dataset, {}).get(variant)
            cells = [dataset, variant, published or "–"]
            rows = [ours[variant][s] for s in sorted(ours.get(variant, {}))]
            cells += ([len(rows), fmt(stats(rows, "kmeans_on_embedding", "acc")), fmt(stats(rows, None, "n_clusters", 1.0))]
                      if rows else [0, "not run (compute)", "–"])
            rows = [public[variant][s] for s in sorted(public.get(variant, {}))]
            if rows:
                acc = stats(rows, "kmeans_on_embedding", "acc")
                cells += [f"{len(rows)}{'' if len(rows) >= 10 else ' (of 10, partial)'}", fmt(acc),
                          verdict(acc, published), fmt(stats(rows, None, "n_clusters", 1.0)), per_seed_text(rows)]
            else:
                cells += [0, "not run (compute)", "–", "–", "–"]
            code = public_code_rows(dataset, variant)
            if code:
                accs = 100 * np.array([r["acc"] for r in code])
                seeds = ",".join(str(r["seed"]) for r in code)
                cells += [f"{len(code)} (seed {seeds})", f"{accs.mean():.1f} ± {accs.std():.1f}", per_seed_text(code),
                          per_seed_text(code, lambda r: f"{100 * r['acc']:.1f}")]
            else:
                cells += [0, "not run (compute)", "–", "–"]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def count_and_acc(datasets=TABLE_ONE_DATASETS, variants=PAPER) -> list[str]:
    """Within each Table I cell, how ACC moves with the number of clusters a
    seed keeps: Spearman's rho and the least-squares slope (points per
    cluster); then pooled over the cells, each centred on its own means."""
    from scipy import stats as scipy_stats
    lines = ["| dataset | variant | seeds | clusters (min–max) | Spearman rho | ACC points per extra cluster |",
             "| --- | --- | --- | --- | --- | --- |"]
    pooled_k, pooled_acc = [], []
    for dataset in datasets:
        results = per_seed(dataset)
        for variant in variants:
            rows = list(results.get(variant, {}).values())
            if len(rows) < 3:
                continue
            k = np.array([r["n_clusters"] for r in rows], float)
            acc = 100 * np.array([r["kmeans_on_embedding"]["acc"] for r in rows])
            rho = scipy_stats.spearmanr(k, acc)[0] if k.std() > 0 else float("nan")
            slope = np.polyfit(k, acc, 1)[0] if k.std() > 0 else float("nan")
            lines.append(f"| {dataset} | {variant} | {len(rows)} | {k.min():.0f}–{k.max():.0f} | {rho:+.2f} | "
                         f"{slope:+.2f} |")
            pooled_k += list(k - k.mean())
            pooled_acc += list(acc - acc.mean())
    if len(pooled_k) >= 3:
        rho, p = scipy_stats.spearmanr(pooled_k, pooled_acc)
        lines.append(f"| all cells, centred | | {len(pooled_k)} | | {rho:+.2f} (p = {p:.1g}) | "
                     f"{np.polyfit(pooled_k, pooled_acc, 1)[0]:+.2f} |")
    return lines


def comparison(datasets, pairs: dict[str, str], title: str) -> list[str]:
    """Side by side: each variant and its counterpart, on the seeds both have."""
    lines = [f"| dataset | variant | {title} | seeds | ACC | NMI | ARI | clusters | "
             f"{title}: ACC | NMI | ARI | clusters | Δ ACC |", "| --- " * 13 + "|"]
    for dataset in datasets:
        results = per_seed(dataset)
        for variant, other in pairs.items():
            seeds = sorted(set(results.get(variant, {})) & set(results.get(other, {})))
            if not seeds:
                lines.append(f"| {dataset} | {variant} | {other} | 0 | not run (compute) |" + " – |" * 8)
                continue
            a = [results[variant][s] for s in seeds]
            b = [results[other][s] for s in seeds]
            cells = []
            for rows in (a, b):
                cells += [fmt(stats(rows, "kmeans_on_embedding", m)) for m in ("acc", "nmi", "ari")]
                cells.append(fmt(stats(rows, None, "n_clusters", 1.0)))
            delta = stats(b, "kmeans_on_embedding", "acc")[0] - stats(a, "kmeans_on_embedding", "acc")[0]
            lines.append(f"| {dataset} | {variant} | {other} | {len(seeds)} | " + " | ".join(cells) + f" | {delta:+.1f} |")
    return lines


def summaries(dataset: str, variant: str) -> list[dict]:
    """The chunk summaries of one variant on one data set."""
    return [chunk[variant] for path in sorted(OUT.glob(f"{dataset}_s*.json"))
            if variant in (chunk := json.loads(path.read_text()))]


def epochs_text(chunks: list[dict]) -> str:
    """'pretraining+clustering' epochs of the chunks (chunks written before
    the field existed ran the paper's 100 + 150)."""
    found = {(c.get("epochs", {}).get("pretrain", 100), c.get("epochs", {}).get("clustering", 150)) for c in chunks}
    return ", ".join(f"{p}+{q}" for p, q in sorted(found))


def rq2_rows() -> list[dict]:
    out = []
    for k in BLOB_KS:
        results = per_seed(f"blobs_k{k}")
        for variant in PAPER:
            rows = [results[variant][s] for s in sorted(results.get(variant, {}))]
            if rows:
                found = np.array([r["n_clusters"] for r in rows], float)
                out.append({"k": k, "variant": variant, "seeds": len(rows), "mean": found.mean(), "sd": found.std(),
                            "epochs": epochs_text(summaries(f"blobs_k{k}", variant)),
                            "acc": stats(rows, "kmeans_on_embedding", "acc"),
                            "nmi": stats(rows, "kmeans_on_embedding", "nmi")})
    return out


def rq2_figure(rows: list[dict], path: Path):
    """Estimated against true number of clusters, one line per variant (as the paper's Figure 1)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ks = np.array(BLOB_KS)
    ax.plot(ks, ks, color="0.6", lw=1, ls="--", label="true k")
    ax.axhline(35, color="0.8", lw=1, ls=":", label="k_init = 35")
    for i, variant in enumerate(PAPER):
        r = [row for row in rows if row["variant"] == variant]
        if r:
            x = np.array([row["k"] for row in r]) + (i - 1) * 0.3
            ax.errorbar(x, [row["mean"] for row in r], yerr=[row["sd"] for row in r], marker="o", ms=4,
                        capsize=3, label="UNSEEN+" + variant.split("_")[1].upper())
    ax.set_xlabel("true number of clusters")
    ax.set_ylabel("estimated number of clusters")
    epochs = ", ".join(sorted({row["epochs"] for row in rows}))
    ax.set_title(f"make_blobs, N = 10,000, d = 100, epochs {epochs}; mean ± sd over seeds", fontsize=8)
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report():
    rows = rq2_rows()
    lines = ["# UNSEEN: Table I, RQ2, RQ3 and the reference code", "",
             "Command: `python experiments/unseen_reproduce.py` (from the committed "
             "`experiments/results/unseen/*.json`; `--queue` trains what is missing, resumably).", "",
             "All numbers: final epoch (150), mean ± sd (ddof=0) over seeds, in %. As in the paper, ACC/NMI/ARI "
             "score a k-means (scikit-learn, 10 starts) with the surviving number of clusters on the final "
             "embedding; 'own assignment' scores the method's own final assignment (nearest active center). "
             "Every variant of a seed starts from the same pretrained autoencoder (100 epochs) and the same "
             "k-means with k_init = 35; t = 0.5; 150 clustering epochs; the settings of the base "
             "algorithms are those of experiments/results/reproduction.md.", "",
             "## Table I: UNSEEN columns", "",
             "Published: ACC of the paper's Table I (10 runs). Verdict: |ours − published| ≤ our sd.", "",
             *table_one(), "",
             "### The number of surviving clusters and ACC, seed by seed", "",
             "Within each cell above: do the seeds that keep more clusters score lower? (k-means ACC on the "
             "final embedding, as Table I.)", "",
             *count_and_acc(), "",
             "## Table I under the public code's set-up (`:public`), and the public code itself", "",
             "`:public` (dcjax.config.PUBLIC_SETUP, checked by tests/test_unseen_public.py): ClustPy's LeakyReLU "
             "autoencoder, one-start k-means at k_init and at the end (scikit-learn's default in the public code), "
             "the reference code's switches (`unseen.reference_code`), and the ragged last batch of each epoch kept "
             "as a step (ClustPy's DataLoader, drop_last=False), in pretraining and clustering; for DKM, the unsquared "
             "distance in its loss (ClustPy's dkm.py:251, `dkm.distance='euclidean'`; added to the preset on "
             "2026-12-07, and both DKM cells rerun with it); everything else as the protocol. Its pretraining is its own (LeakyReLU, last batch kept), 100 epochs per seed. Command: "
             "`python experiments/unseen_reproduce.py --preset public --train usps:0:5:unseen_dec` (and the other "
             "chunks; results in `experiments/results/unseen/public/`). Public code: the public file imported "
             "unmodified with the ClustPy of its day, on the same data file, one run per seed "
             "(`experiments/unseen_public_code.py dec <seed> 100 150 /work/shared/data/usps.npz`, results in "
             "`experiments/results/unseen_public_code/`). Clusters per seed: the number alive after epoch 150, in "
             "seed order. ACC: k-means with that number of clusters on the final embedding, as Table I.", "",
             *public_table(), "",
             "## The reference code's behaviour (`unseen.reference_code`)", "",
             "The public code stops learning the DEC/DKM centers at the first removal and does not prune "
             "DCN's counts; the paper describes neither. Same seeds, same pretraining; Δ = reference code − paper.", "",
             *comparison(("optdigits", "usps", "pendigits"), dict(zip(PAPER, REFERENCE)), "reference code"), "",
             "## RQ3: without the nearest-neighbour loss (the paper's Table II)", "",
             "Δ = without − with the loss.", "",
             *comparison(("optdigits", "usps", "pendigits"), dict(zip(PAPER, NO_NN)), "without nn loss"), "",
             "## RQ2: synthetic data, the estimated number of clusters", "",
             "make_blobs(n_samples=10,000, n_features=100, centers=k, cluster_std=1, random_state=1), "
             "z-scored per feature, k_init = 35. Estimated k: the number of clusters alive after the last clustering "
             "epoch. Epochs: pretraining + clustering (the paper: 100 + 150; fewer where the CPU could not afford them).",
             "",
             "| true k | variant | seeds | epochs | estimated k | ACC | NMI |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             *[f"| {r['k']} | {r['variant']} | {r['seeds']} | {r['epochs']} | {r['mean']:.1f} ± {r['sd']:.1f} | "
               f"{fmt(r['acc'])} | {fmt(r['nmi'])} |" for r in rows], ""]
    if not rows:
        lines += ["Not run (compute).", ""]
    else:
        rq2_figure(rows, RESULTS / "unseen_rq2.png")
        lines += ["![estimated vs true number of clusters](unseen_rq2.png)", ""]
    lines += ["## Seconds per seed-epoch (clustering phase, median over epochs and chunks)", "",
              "| dataset | " + " | ".join(PAPER) + " |", "| --- " * (len(PAPER) + 1) + "|"]
    for dataset in ("optdigits", "usps", "pendigits"):
        cells = [seconds(dataset, v) for v in PAPER]
        lines.append(f"| {dataset} | " + " | ".join(f"{c:.3f}" if c else "–" for c in cells) + " |")
    write_report(RESULTS / "unseen.md", lines)


def parse_chunk(spec: str):
    """'usps:0:5' or 'usps:0:5:unseen_dec,unseen_dec_nonn' -> (dataset, first seed, seeds, variants)."""
    dataset, first_seed, seeds, *variants = spec.split(":")
    return dataset, int(first_seed), int(seeds), tuple(variants[0].split(",")) if variants else PAPER


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", action="append", default=[],
                    help="a chunk DATASET:FIRST_SEED:SEEDS[:VARIANT,...] (default variants: the paper's three)")
    ap.add_argument("--queue", action="store_true", help="train every chunk of QUEUE not finished yet, in order")
    ap.add_argument("--runs", default="runs/unseen", help="where the checkpoints go")
    ap.add_argument("--blob-epochs", help="PRETRAIN,CLUSTERING epochs of the synthetic (RQ2) chunks given by --train")
    ap.add_argument("--preset", default="", choices=("", "public"),
                    help="train the --train chunks under a config preset: 'public' is the UNSEEN public code's "
                         "set-up (results in experiments/results/unseen/public/, runs in <runs>/<chunk>_public)")
    args = ap.parse_args()
    chunks = [(*parse_chunk(spec), args.preset) for spec in args.train]
    if args.queue:
        chunks += [(*chunk, "") for chunk in QUEUE]
    blob_epochs = tuple(int(e) for e in args.blob_epochs.split(",")) if args.blob_epochs else None
    for dataset, first_seed, seeds, variants, preset in chunks:
        run_chunk(dataset, first_seed, seeds, variants, args.runs,
                  blob_epochs if dataset.startswith("blobs_k") else None, preset)
        report()
    report()


if __name__ == "__main__":
    main()
