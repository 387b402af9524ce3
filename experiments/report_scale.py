"""Does the report render at 10 seeds x 250 epochs x 70,000 points? Times
and peak memory of each figure of `dcjax.report` on a real run of that size.

    python experiments/report_scale.py --workdir /work/runs/i19report/dec_mnist70k

Scoring such a run (`dcjax.evaluate`, 70,000 points x 10 seeds per epoch)
takes hours on a 2-core machine, and is the evaluator's cost, not the
report's. So this script draws what needs no score table from the run
itself (records, snapshots: the losses, the cluster sizes, the PCA and UMAP
views of every seed's final embedding, all 70,000 points read), and the
score figures from a random table of the run's shape (seeds x epochs x the
columns dcjax.select reads), with the final epoch standing in for the
selected one. Prints one line per figure: seconds, its PNG's size, the
peak resident memory so far.
"""
import argparse
import logging
import resource
import time

import numpy as np
import pandas as pd

from dcjax import checkpointing, evaluate, report


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--no-umap", dest="umap", action="store_false")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    run = report.Run(args.workdir, progress=False)
    with evaluate._quiet_orbax():
        epochs = checkpointing.list_epochs(args.workdir, "clustering")
    final = epochs[-1]
    n = run.snapshot(final)["embedding"].shape[1]
    print(f"{args.workdir}: {len(run.seeds)} seeds, clustering epochs 0-{final}, {n:,} points; "
          f"peak {peak_mb():.0f} MB after reading one snapshot")
    # Stand-ins for what scoring and selection would give: no labels, no selector run.
    rng = np.random.default_rng(0)
    grid = pd.DataFrame([(s, e) for s in run.seeds for e in epochs], columns=["seed", "epoch"])
    scores = grid.assign(phase="clustering", **{c: rng.normal(size=len(grid)).cumsum()
                                                 for c in report.SCORE_PANELS + evaluate.LABEL_BASED})
    run.scores, run.label_free, run.final_epoch = scores, scores, final
    run.selection = {"seeds": [{"seed": s, "epoch": final} for s in run.seeds]}
    run.launch_scores = None
    figures = [("losses", lambda: report.loss_figure(run)), ("scores", lambda: report.scores_figure(run)),
               ("cluster_sizes", lambda: report.cluster_sizes_figure(run)),
               ("embeddings_pca", lambda: report.embeddings_figure(run, "pca")),
               ("evaluation", lambda: report.evaluation_figure(run))]
    if args.umap:
        figures.insert(4, ("embeddings_umap", lambda: report.embeddings_figure(run, "umap")))
    total = time.perf_counter()
    for name, draw in figures:
        t0 = time.perf_counter()
        png = report._png(draw())
        print(f"  {name:16s} {time.perf_counter() - t0:6.1f} s  {len(png) / 1e3:6.0f} kB  peak {peak_mb():.0f} MB")
    print(f"all figures: {time.perf_counter() - total:.0f} s, peak resident memory {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
