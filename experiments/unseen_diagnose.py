"""Why do clusters survive? A short UNSEEN run on one seed, from an existing
pretrained autoencoder, printing per epoch the number of active clusters,
the ACC of the method's own assignment, and the sizes of the active clusters
against their reference sizes C⁰.

    python experiments/unseen_diagnose.py unseen_dec --pretrained /work/runs/i18/unseen/optdigits_s0/ae_kmeans \
        --epochs 30 --set unseen.reference_code=True

No checkpoints are written: it runs the same compiled epoch functions as
`dcjax.train.train_and_evaluate` (the trainer), in memory.

    python experiments/unseen_diagnose.py --purity /work/runs/i18/unseen/optdigits_s0/unseen_dec

reads a finished run's final snapshot instead: per seed, how many active
clusters are mostly (> 80%) one class, and how many clusters each class is
split over. It tells whether the surviving clusters are real sub-groups of
the classes or bookkeeping leftovers (empty or mixed clusters).
"""
import argparse
import ast
import json
import time

import jax
import numpy as np

from dcjax import checkpointing, config as config_lib, data, metrics, train


def purity(workdir: str):
    """Per seed of a finished run: the classes behind its active clusters at the final epoch."""
    cfg = checkpointing.load_config(workdir)
    y = np.asarray(data.load_dataset(cfg.dataset).y)
    snap = checkpointing.load_snapshot(workdir, int(cfg.clustering.epochs))
    for i, (labels, active) in enumerate(zip(snap["assignments"], snap["active"])):
        majority, mostly_one = [], 0
        for c in np.flatnonzero(active):
            counts = np.bincount(y[labels == c], minlength=y.max() + 1)
            majority.append(counts.argmax())
            mostly_one += counts.max() > 0.8 * max(counts.sum(), 1)
        per_class = np.bincount(majority, minlength=y.max() + 1)
        print(f"seed {int(cfg.seed) + i}: {int(active.sum())} active, {int(mostly_one)} of them > 80% one class, "
              f"empty: {int(np.sum(np.bincount(labels, minlength=active.size)[active] == 0))}; "
              f"clusters per class {per_class.tolist()}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", nargs="?", help="unseen_dcn, unseen_dec or unseen_dkm")
    parser.add_argument("--purity", help="a finished run's workdir: the classes behind its surviving clusters")
    parser.add_argument("--dataset", default="optdigits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", help="a run's workdir holding the pretrained AE")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], help="dotted.field=value (a Python literal)")
    parser.add_argument("--json", help="write the per-epoch trace here")
    args = parser.parse_args()
    if args.purity:
        return purity(args.purity)
    if not (args.variant and args.pretrained):
        parser.error("a variant and --pretrained, or --purity")

    cfg = config_lib.make_config(args.variant, args.dataset)
    cfg.seed, cfg.seeds, cfg.progress, cfg.pretrained_from = args.seed, 1, False, args.pretrained
    for item in args.set:
        field, value = item.split("=", 1)
        *parents, leaf = field.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = ast.literal_eval(value)
    dataset = data.load_dataset(cfg.dataset)
    y = np.asarray(dataset.y)
    trainer = train.make_train(cfg, *dataset.x.shape, dataset.n_clusters)
    keys = train.seed_keys(cfg)
    x = jax.numpy.asarray(dataset.x)
    ae = train._pretrained_params(cfg, keys, trainer, x)
    state, snap = trainer.init_clustering(ae, keys, x)
    trace = []

    def report(epoch, snap, state, seconds):
        labels = np.asarray(snap["assignments"][0])
        active = np.asarray(snap["active"][0])
        extras = state["extras"]
        dying_on = np.asarray(extras["labels"][0]) if "labels" in extras else labels   # DCN: running labels
        sizes = np.bincount(dying_on, minlength=active.size)
        ref = extras.get("unseen", {}).get("reference_labels")
        ref_sizes = np.bincount(np.asarray(ref[0]), minlength=active.size) if ref is not None else sizes
        ratio = sizes[active] / np.maximum(ref_sizes[active], 1)
        acc = float(metrics.cluster_accuracy(y, labels, active.size, int(y.max()) + 1))
        row = {"epoch": epoch, "active": int(active.sum()), "acc": acc,
               "min_ratio": float(ratio.min()), "sizes": sorted(sizes[active].tolist())}
        trace.append(row)
        print(f"epoch {epoch:3d}  active {row['active']:2d}  acc {row['acc']:.3f}  "
              f"min size/C0 {row['min_ratio']:.2f}  sizes {row['sizes']}  ({seconds:.1f} s)", flush=True)

    report(0, snap, state, 0.0)
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        state, out = trainer.cluster_epoch(state, x)
        report(epoch, out, state, time.time() - t0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"variant": args.variant, "dataset": args.dataset, "seed": args.seed,
                       "settings": args.set, "trace": trace}, f)


if __name__ == "__main__":
    main()
