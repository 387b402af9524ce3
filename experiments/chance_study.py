"""The chance warning (dcjax/chance.py) on runs built to have no structure,
and its false-alarm rate on the committed protocol runs.

    python experiments/chance_study.py [--runs runs/chance] [--seeds 5] [--with-deccs] [--report-only]

1. Controls: every algorithm on two data sets without cluster structure, of
   digits' shape (1,797 x 64, k = 10): `uniform` (i.i.d. uniform noise) and
   `shuffled:digits` (each column of digits permuted on its own: the same
   marginals, no dependence between features). Shortened protocol (50
   pretraining epochs shared by all algorithms as the protocol does, 50
   clustering epochs; DECCS, with --with-deccs, its 10 rounds). The warning
   should fire on all.
2. False alarms: the committed per-epoch tables
   (experiments/results/scores/*.csv, the protocol runs of the selection
   study, and scores_launch/*.csv, the launch study's). They hold the cross-seed agreement of every epoch
   (`mean_pairwise_ari`) and `size_entropy`, all the test reads; single-seed
   tables (MNIST, Fashion-MNIST: one seed per run) cannot be tested.
   Counted per run (its last epoch, what the summary tests) and per epoch.

Writes experiments/results/chance.md and chance_controls.csv.
"""
import argparse
import glob
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcjax import chance, config as config_lib, evaluate, selection, train
from protocol import write_report

RESULTS = Path(__file__).parent / "results"
CONTROLS = ("uniform", "shuffled:digits")
ALGORITHMS = ("ae_kmeans", "dec", "idec", "dcn", "dkm")   # DECCS too with --with-deccs (~30 min a control)
K = 10


def control_config(algorithm: str, dataset: str, seeds: int, pretrained: Path | None):
    c = config_lib.make_config(algorithm, dataset)
    c.seeds, c.progress = seeds, False
    c.dataset.n_samples, c.dataset.n_features, c.dataset.n_clusters = 1797, 64, K
    c.pretrain.epochs = 50
    if algorithm not in ("ae_kmeans", "deccs"):
        c.clustering.epochs = 50
    if pretrained is not None:
        c.pretrained_from = str(pretrained)
    return c


def run_controls(runs: Path, seeds: int, path: Path, algorithms=ALGORITHMS) -> pd.DataFrame:
    """Train (or resume) every control run; rows written to `path` as each is done."""
    rows = []
    for dataset in CONTROLS:
        base = runs / dataset.replace(":", "_")
        for algorithm in algorithms:
            workdir = base / algorithm
            pretrained = None if algorithm == "ae_kmeans" else base / "ae_kmeans"
            if not (workdir / "summary.json").exists():
                t0 = time.time()
                train.train_and_evaluate(control_config(algorithm, dataset, seeds, pretrained), workdir)
                print(f"{dataset} {algorithm}: trained in {time.time() - t0:.0f} s", flush=True)
            scores = evaluate.evaluate_run(workdir, progress=False)   # first: with the labels, where there are
            test = selection.run_chance_test(workdir)      # the selection phase's last epoch
            rows.append({"dataset": dataset, "algorithm": algorithm, "phase": test["phase"],
                         "agreement_ari": test["value"], "effective_clusters": test["effective_clusters"],
                         "seeds": test["seeds"], "agreement_nmi": test["agreement_nmi"],
                         # the start of clustering, read when the end is below the line (chance.chance_test)
                         "start_ari": (test.get("start") or {}).get("value", np.nan),
                         "came_apart": bool(test.get("came_apart", False)),
                         "silhouette": float(scores[scores.phase == test["phase"]].groupby("epoch")
                                             .silhouette.mean().iloc[-1]),
                         "nmi_to_labels": float(scores[scores.phase == test["phase"]].groupby("epoch")
                                                .nmi.mean().iloc[-1]) if "nmi" in scores else np.nan})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(path, index=False, float_format="%.5g")
    return pd.DataFrame(rows)


def committed_tables() -> pd.DataFrame:
    """The test on every epoch of every committed table's selection phase:
    the per-seed study's runs (scores/) and the launch study's (scores_launch/)."""
    out = []
    for path in sorted(glob.glob(str(RESULTS / "scores" / "*.csv")) + glob.glob(str(RESULTS / "scores_launch" / "*.csv"))):
        table = pd.read_csv(path)
        per_epoch = chance.chance_test_table(table, K)
        per_epoch["table"] = f"{Path(path).parent.name}/{Path(path).stem}"
        per_epoch["final"] = per_epoch.epoch == per_epoch.epoch.max()
        out.append(per_epoch)
    return pd.concat(out, ignore_index=True)


def rate(flags: pd.Series) -> str:
    return f"{int(flags.sum())} / {len(flags)} ({100 * flags.mean():.1f}%)" if len(flags) else "0 / 0"


def write(controls: pd.DataFrame, committed: pd.DataFrame):
    controls = controls.assign(warns=[chance.verdict(r.agreement_ari, r.effective_clusters, r.seeds)
                                      ["looks_like_chance"] is True and not getattr(r, "came_apart", False)
                                      for r in controls.itertuples()])
    if "start_ari" not in controls:
        controls = controls.assign(start_ari=np.nan)
    one_cluster = controls.effective_clusters < chance.MIN_EFFECTIVE_CLUSTERS
    tested = committed[committed.looks_like_chance.notna()]
    final = tested[tested.final]
    untested = sorted(set(committed.table) - set(tested.table))
    warned = tested.looks_like_chance == True   # noqa: E712  (None was dropped above)
    lines = ["# Is a run better than chance? (experiments/chance_study.py)", "",
             f"The test (dcjax/chance.py): mean pairwise ARI across seeds of the run's partitions; below "
             f"{chance.AGREEMENT_THRESHOLD}, or essentially one cluster (exp of the size entropy < "
             f"{chance.MIN_EFFECTIVE_CLUSTERS:g}), it warns 'no better than chance'.", "",
             "## Controls without cluster structure (it should warn on every one)", "",
             "| data | algorithm | phase | agreement (ARI) | (NMI) | effective clusters | silhouette | NMI to labels "
             "| at the start of clustering (ARI) | warns |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in controls.itertuples():
        lines.append(f"| {r.dataset} | {r.algorithm} | {r.phase} | {r.agreement_ari:.3f} | {r.agreement_nmi:.3f} "
                     f"| {r.effective_clusters:.1f} "
                     f"| {r.silhouette:.3f} | {r.nmi_to_labels:.3f} | "
                     + ("" if not np.isfinite(r.start_ari) else f"{r.start_ari:.3f}") + " | "
                     + (("**no** (came apart)" if getattr(r, "came_apart", False) else "**no**") if not r.warns else "yes (one cluster)"
                        if r.effective_clusters < chance.MIN_EFFECTIVE_CLUSTERS else "yes (agreement)") + " |")
    lines += ["", f"Warnings: {rate(controls.warns)} control runs; highest control agreement "
              f"{controls.agreement_ari[~one_cluster].max():.3f} (runs not caught by the one-cluster rule). "
              f"The threshold ({chance.AGREEMENT_THRESHOLD}) was set after these controls and the protocol "
              "runs below were measured (between their highest and lowest), so both are in sample.", "",
              "## False alarms on the committed protocol runs", "",
              f"Entered: {tested.table.nunique()} runs with at least 2 seeds (experiments/results/scores/ and "
              f"scores_launch/; {int(final.seeds.sum())} seeds in all, "
              + ", ".join(f"{n} runs of {s} seeds" for s, n in final.seeds.value_counts().sort_index().items())
              + f"), {len(tested)} epochs of their selection phases (pretraining for AE+k-means, 100 epochs; "
              "clustering for the others, 151). Every data set, digits to pendigits, at k = 10.", "",
              f"- per run (the last epoch of its selection phase, what the summary tests): {rate(final.looks_like_chance == True)}"   # noqa: E712
              f"; lowest agreement {final.value.min():.3f} ({final.loc[final.value.idxmin(), 'table']})",
              f"- per epoch (every epoch of every run): {rate(warned)}"
              + (f"; the warned epochs: " + ", ".join(f"{t} epochs {g.epoch.min()}-{g.epoch.max()} ({len(g)})"
                                                      for t, g in tested[warned].groupby("table")) if warned.any() else ""),
              f"- not testable (one seed per table): {len(untested)} tables ({', '.join(untested)})", ""]
    write_report(RESULTS / "chance.md", lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/chance")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--report-only", action="store_true", help="tables from chance_controls.csv only")
    ap.add_argument("--with-deccs", action="store_true", help="DECCS on the controls as well")
    args = ap.parse_args()
    path = RESULTS / "chance_controls.csv"
    if args.report_only:
        controls = pd.read_csv(path)
    else:
        controls = run_controls(Path(args.runs), args.seeds, path,
                                ALGORITHMS + ("deccs",) * args.with_deccs)
    write(controls, committed_tables())


if __name__ == "__main__":
    main()
