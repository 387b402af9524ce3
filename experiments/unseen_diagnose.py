"""Why do clusters survive? A short UNSEEN run on one seed, from an existing
pretrained autoencoder, printing per epoch the number of active clusters,
the ACC of the method's own assignment, and the sizes of the active clusters
against their reference sizes C⁰.

    python experiments/unseen_diagnose.py unseen_dec --pretrained /work/runs/i18/unseen/optdigits_s0/ae_kmeans \
        --epochs 30 --set unseen.reference_code=True

No checkpoints are written: it runs the same compiled epoch functions as
`dcjax.train.train_and_evaluate` (the trainer), in memory.
"""
import argparse
import ast
import json
import time

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment

from dcjax import config as config_lib, data, train


def accuracy(y, labels):
    """Unsupervised accuracy (Hungarian matching), the usual ACC."""
    table = np.zeros((labels.max() + 1, y.max() + 1))
    np.add.at(table, (labels, y), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() / len(y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", help="unseen_dcn, unseen_dec or unseen_dkm")
    parser.add_argument("--dataset", default="optdigits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", required=True, help="a run's workdir holding the pretrained AE")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], help="dotted.field=value (a Python literal)")
    parser.add_argument("--json", help="write the per-epoch trace here")
    args = parser.parse_args()

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
        row = {"epoch": epoch, "active": int(active.sum()), "acc": float(accuracy(y, labels)),
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
