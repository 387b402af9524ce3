"""Run the public UNSEEN code itself on our data, to see how many clusters
*it* leaves (is a count of 16-19 on Optdigits ours alone, or the method's?).

Runs inside ClustPy's venv (experiments/setup_clustpy_env.sh), never imports
dcjax. Nothing of the public code is copied here: it is imported, unmodified,
from a file you take from its repository, next to the ClustPy it was written
against (its imports, e.g. `clustpy.deep._utils.encode_batchwise`, are gone
from today's ClustPy):

    git -C <UNSEEN clone> show d0dd98b:unseen.py > /tmp/unseen_ref/unseen_reference.py
    for f in $(git -C <ClustPy clone> ls-tree -r --name-only 2c02615 clustpy | grep '\\.py$'); do
        mkdir -p /tmp/clustpy_2024/$(dirname $f); git -C <ClustPy clone> show 2c02615:$f > /tmp/clustpy_2024/$f; done
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/clustpy_2024:/tmp/unseen_ref:experiments \\
        /work/venvs/clustpy/bin/python experiments/unseen_public_code.py dec 0

ClustPy 2c02615 (2024-11-07) is the commit of the same day as the UNSEEN
repository's last one. Settings: those of the paper's `quantitative_experiments`
(k_init = 35, t = 0.5, 100 pretraining and 150 clustering epochs, ClustPy's
defaults otherwise: LeakyReLU autoencoder, one-start k-means, lr 1e-4, the
reference code's own loss weights), the data z-scored with one global mean and
std as its `image_normalize`. One thread: torch's default thread pool is ~5x
slower on this shared 2-core machine. Prints one line `RESULT {json}`.
"""
import json
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from _clustpy_worker import import_clustpy


def accuracy(y, labels):
    table = np.zeros((labels.max() + 1, y.max() + 1))
    np.add.at(table, (labels, y), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(y))


def main():
    variant, seed = sys.argv[1], int(sys.argv[2])
    pretrain, clustering = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (100, 150)
    data_file = sys.argv[5] if len(sys.argv) > 5 else "/work/shared/data/optdigits.npz"
    import_clustpy()
    import unseen_reference   # the public file, unmodified
    data = np.load(data_file)
    x = unseen_reference.image_normalize(data["x"].astype(np.float32))
    y = data["y"].astype(int)
    algorithm = {"dcn": unseen_reference.UNSEEN_DCN, "dec": unseen_reference.UNSEEN_DEC,
                 "dkm": unseen_reference.UNSEEN_DKM}[variant]
    start = time.time()
    model = algorithm(n_clusters_init=35, dying_threshold=0.5, pretrain_epochs=pretrain,
                      clustering_epochs=clustering, random_state=seed).fit(x)
    own = getattr(model, f"{variant}_labels_")
    print("RESULT " + json.dumps({
        "variant": f"unseen_{variant}", "seed": seed, "data": data_file, "epochs": [pretrain, clustering],
        "n_clusters": int(model.n_clusters),
        "kmeans_on_embedding": {"acc": accuracy(y, model.labels_), "nmi": normalized_mutual_info_score(y, model.labels_),
                                "ari": adjusted_rand_score(y, model.labels_)},
        "algorithm": {"acc": accuracy(y, own), "nmi": normalized_mutual_info_score(y, own),
                      "ari": adjusted_rand_score(y, own)},
        "seconds": time.time() - start}), flush=True)


if __name__ == "__main__":
    main()
