"""UNSEEN on a small data set, through the estimator as a user calls it:
600 points of 4 well-separated make_blobs clusters (8 features), k_init = 12,
3 seeds, the full protocol (100 + 150 epochs) with a small network.

    python experiments/unseen_small_data.py [--workdir runs/unseen_small]

Prints the clusters found, the selected epochs, the launch's choice, the ARI
against the blobs and how often `predict` agrees with `labels_` (the README's
caution under UNSEEN quotes these).
"""
import argparse
import time

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from dcjax import UnseenDEC


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="keep the checkpoints here (default: a temporary folder)")
    args = parser.parse_args()
    x, y = make_blobs(n_samples=600, n_features=8, centers=4, cluster_std=1.0, random_state=3)
    start = time.perf_counter()
    model = UnseenDEC(k_init=12, n_seeds=3, pretrain_epochs=100, clustering_epochs=150, batch_size=64,
                      hidden_dims=(64, 64, 128), workdir=args.workdir).fit(x)
    print(f"fit: {time.perf_counter() - start:.0f} s")
    print("clusters found:", model.n_clusters_, "selected epochs:", model.selected_epoch_.tolist())
    print("launch:", model.launch_["candidate"] if model.launch_ else None)
    print("ARI vs the blobs:", round(adjusted_rand_score(y, model.labels_), 3))
    print("predict agrees with labels_:", round(float(np.mean(model.predict(x) == model.labels_)), 3))


if __name__ == "__main__":
    main()
