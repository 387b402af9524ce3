"""ClustPy side of experiments/clustpy_protocol.py: the published protocol for
one seed, through ClustPy's public API. Runs inside ClustPy's own venv
(experiments/setup_clustpy_env.sh) and never imports dcjax.

One seed: pretrain a FeedforwardAutoencoder [d, 500, 500, 2000, 10] with ReLU
(100 epochs, Adam 1e-3, batch 256, MSE), then, each from a copy of that
autoencoder as the protocol asks (`neural_network=` with `fitted=True`, so
ClustPy does not pretrain again):
- ae_kmeans: scikit-learn KMeans (n_init=10) on the embedding;
- dec:  DEC(alpha=1), clustering loss only;
- idec: IDEC(clustering_loss_weight=0.1, ssl_loss_weight=1);
- dcn:  DCN(clustering_loss_weight=0.05, ssl_loss_weight=1);
- dkm:  DKM(alphas=(1000,), clustering_loss_weight=1, ssl_loss_weight=1);
150 clustering epochs with Adam 1e-4, everything else ClustPy's defaults
(its own k-means initialisation included: scikit-learn's KMeans with default
parameters, which since scikit-learn 1.4 means one k-means++ start).

Two labelings per algorithm: `<alg>.npy`, the algorithm's own final
assignment (`dec_labels_`, `dcn_labels_`, `dkm_labels_`), which dcjax's
tables report; and `<alg>_kmeans.npy`, ClustPy's `labels_`, a k-means
(default parameters) re-run on the final embedding. For AE+k-means,
`ae_kmeans_kmeans.npy` is that default-parameter k-means on the pretrained
embedding, next to the n_init=10 one in `ae_kmeans.npy`.

Resumable per algorithm: the pretrained weights (ae.pt) and each algorithm's
final labels (<alg>.npy, plus <alg>.json with its wall time) go to --out as
soon as they exist; a restarted worker reuses them.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _clustpy_worker import import_clustpy  # noqa: E402  (torchvision work-around)

ALGORITHMS = ("ae_kmeans", "dec", "idec", "dcn", "dkm")


def pretrained_autoencoder(x, args, out: Path):
    from clustpy.deep._data_utils import get_dataloader
    from clustpy.deep._utils import mean_squared_error
    from clustpy.deep.neural_networks import FeedforwardAutoencoder

    ae = FeedforwardAutoencoder(layers=[x.shape[1], 500, 500, 2000, 10],
                                activation_fn=torch.nn.ReLU, random_state=args.seed)
    path = out / "ae.pt"
    if path.exists():
        ae.load_state_dict(torch.load(path))
        ae.fitted = True
        return ae, None
    torch.manual_seed(args.seed)
    loader = get_dataloader(x, args.batch_size, shuffle=True)
    t0 = time.perf_counter()
    ae.fit(n_epochs=args.pretrain_epochs, optimizer_params={"lr": 1e-3}, dataloader=loader,
           optimizer_class=torch.optim.Adam, ssl_loss_fn=mean_squared_error)
    seconds = time.perf_counter() - t0
    torch.save(ae.state_dict(), path)
    (out / "pretrain.json").write_text(json.dumps({"seconds": seconds}))
    return ae, seconds


def cluster(alg: str, x, ae, args) -> tuple[np.ndarray, np.ndarray]:
    """(the algorithm's own labels, ClustPy's `labels_`: k-means re-run on the final embedding)."""
    from clustpy.deep import DCN, DEC, DKM, IDEC
    from clustpy.deep._data_utils import get_dataloader
    from clustpy.deep._encoding_utils import encode_batchwise
    from sklearn.cluster import KMeans

    net = copy.deepcopy(ae)
    common = dict(n_clusters=args.n_clusters, batch_size=args.batch_size,
                  clustering_optimizer_params={"lr": 1e-4}, clustering_epochs=args.clustering_epochs,
                  neural_network=net, random_state=args.seed)
    if alg == "ae_kmeans":
        z = encode_batchwise(get_dataloader(x, args.batch_size, shuffle=False), net)
        return (KMeans(args.n_clusters, n_init=10, random_state=args.seed).fit(z).labels_,
                KMeans(args.n_clusters, random_state=args.seed).fit(z).labels_)
    model = {"dec": lambda: DEC(alpha=1.0, **common),
             "idec": lambda: IDEC(alpha=1.0, clustering_loss_weight=0.1, ssl_loss_weight=1.0, **common),
             "dcn": lambda: DCN(clustering_loss_weight=0.05, ssl_loss_weight=1.0, **common),
             "dkm": lambda: DKM(alphas=(1000.0,), clustering_loss_weight=1.0, ssl_loss_weight=1.0, **common),
             }[alg]()
    model.fit(x)
    own = {"dec": "dec_labels_", "idec": "dec_labels_", "dcn": "dcn_labels_", "dkm": "dkm_labels_"}[alg]
    return getattr(model, own), model.labels_


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help=".npy file: the driver's normalised (N, d) float32 array")
    ap.add_argument("--out", required=True, help="folder for this seed's results")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--n-clusters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--pretrain-epochs", type=int, default=100)
    ap.add_argument("--clustering-epochs", type=int, default=150)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import_clustpy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = np.load(args.data).astype(np.float32)
    ae, seconds = pretrained_autoencoder(x, args, out)
    if seconds is not None:
        print(f"seed {args.seed} pretraining: {seconds:.0f} s", flush=True)
    for alg in args.algorithms.split(","):
        if (out / f"{alg}.npy").exists():
            continue
        t0 = time.perf_counter()
        own, kmeans = cluster(alg, x, ae, args)
        seconds = time.perf_counter() - t0
        np.save(out / f"{alg}_kmeans.npy", np.asarray(kmeans, np.int32))
        (out / f"{alg}.json").write_text(json.dumps({"seconds": seconds}))
        np.save(out / f"{alg}.npy", np.asarray(own, np.int32))   # last: marks the algorithm done
        print(f"seed {args.seed} {alg}: {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
