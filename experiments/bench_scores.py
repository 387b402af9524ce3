"""Which label-free scores are cheap enough to compute inside the training loop?

    python experiments/bench_scores.py --workdir runs/protocol/usps/dec --epoch 150

Times every score of `dcjax.metrics` on one real checkpoint (all seeds of one
epoch, vmapped as the evaluator does) and sets it next to that run's
clustering epoch: milliseconds per seed-epoch, and % of one seed-epoch of
training (from --epoch-seconds, e.g. the bench_vs_clustpy bare timing).
A score costing < 1% of an epoch can run in the loop at no visible cost.
Writes experiments/results/bench_scores.md.
"""
import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import checkpointing, metrics

RESULTS = Path(__file__).resolve().parent / "results"


def best_ms(fn, repeats):
    jax.block_until_ready(fn())  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/protocol/usps/dec")
    ap.add_argument("--epoch", type=int, default=150)
    ap.add_argument("--epoch-seconds", type=float, required=True,
                    help="seconds of one clustering seed-epoch of this run's algorithm on this machine")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    snap = checkpointing.load_snapshot(args.workdir, args.epoch)
    prev = checkpointing.load_snapshot(args.workdir, args.epoch - 1)
    z = jnp.asarray(snap["embedding"], jnp.float32)                  # (S, N, e)
    labels, before = jnp.asarray(snap["assignments"]), jnp.asarray(prev["assignments"])
    centers = jnp.asarray(snap["centers"])
    s, n, _ = z.shape
    k = centers.shape[1]
    probs = jax.nn.softmax(-jnp.sum((z[:, :, None] - centers[:, None]) ** 2, -1), -1)
    key = jax.random.PRNGKey(0)

    def per_seed(f):
        return jax.jit(jax.vmap(f))

    cases = {
        "silhouette (exact, O(N²))": per_seed(lambda a, b: metrics.silhouette(a, b, k)),
        "silhouette (sampled, 1,000 points)": per_seed(lambda a, b: metrics.silhouette_sampled(a, b, k, key, 1000)[0]),
        "simplified silhouette": per_seed(lambda a, b: metrics.simplified_silhouette(a, b, k)),
        "Calinski–Harabasz": per_seed(lambda a, b: metrics.calinski_harabasz(a, b, k)),
        "Davies–Bouldin": per_seed(lambda a, b: metrics.davies_bouldin(a, b, k)),
        "within + between dispersion": per_seed(lambda a, b: metrics.within_cluster_dispersion(a, b, k)
                                                + metrics.between_cluster_dispersion(a, b, k)),
        "size entropy + empty/tiny clusters": per_seed(lambda a, b: metrics.cluster_size_entropy(b, k)
                                                       + metrics.count_tiny_clusters(b, k)),
        "effective rank": per_seed(lambda a, b: metrics.effective_rank(a)),
    }
    rows = [(name, best_ms(lambda f=f: f(z, labels), args.repeats) / s) for name, f in cases.items()]
    conf = per_seed(lambda p: metrics.mean_max_probability(p) + metrics.mean_assignment_entropy(p))
    rows.append(("soft-assignment confidence (max prob, entropy)", best_ms(lambda: conf(probs), args.repeats) / s))
    # (each jitted function is built once, outside the timed lambda)
    stability = per_seed(lambda a, b: sum(metrics.assignment_stability(a, b, k).values()))
    rows.append(("stability vs previous epoch (ARI, NMI, changed)",
                 best_ms(lambda: stability(before, labels), args.repeats) / s))
    ari_nmi = per_seed(lambda a, b: metrics.adjusted_rand_index(a, b, k, k) + metrics.normalized_mutual_info(a, b, k, k))
    rows.append(("stability vs previous epoch, ARI + NMI only (no Hungarian matching)",
                 best_ms(lambda: ari_nmi(before, labels), args.repeats) / s))
    agree = jax.jit(lambda l: metrics.seed_agreement(l, k))
    rows.append((f"agreement across seeds ({s} seeds, all pairs)", best_ms(lambda: agree(labels), args.repeats) / s))
    lines = ["# Cost of each label-free score on a real checkpoint", "",
             f"Command: `python experiments/bench_scores.py --workdir {args.workdir} --epoch {args.epoch} "
             f"--epoch-seconds {args.epoch_seconds}`", "",
             f"Checkpoint: {args.workdir}, clustering epoch {args.epoch}: {s} seeds × {n} points, embedding "
             f"dimension {z.shape[2]}, k = {k}. Machine: {os.cpu_count()} CPU cores, JAX {jax.__version__}; "
             f"1-min load average {os.getloadavg()[0]:.1f} at the end. Best of {args.repeats} calls after compiling, "
             f"vmapped over the seeds, divided by the number of seeds. One clustering seed-epoch of training = "
             f"{args.epoch_seconds:.3f} s (given).", "",
             "| score | ms per seed-epoch | % of a training seed-epoch | cheap enough for the loop (< 1%) |",
             "| --- | ---: | ---: | --- |"]
    for name, ms in rows:
        pct = 100 * ms / 1000 / args.epoch_seconds
        lines.append(f"| {name} | {ms:.2f} | {pct:.2f}% | {'yes' if pct < 1 else 'no'} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "bench_scores.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
