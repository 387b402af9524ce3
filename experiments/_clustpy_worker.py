"""ClustPy side of experiments/bench_vs_clustpy.py. Runs inside ClustPy's own
venv (experiments/setup_clustpy_env.sh), never imports dcjax.

The driver starts it once and sends one JSON command per line on stdin; each
answer is one line `RESULT {json}` on stdout (ClustPy prints other things to
stdout, which the driver skips; tqdm bars go to stderr).

Start-up (untimed): load the driver's preprocessed array, build ClustPy's
FeedforwardAutoencoder [d, 500, 500, 2000, 10] with ReLU, ClustPy's own
train/test dataloaders (batch 256, shuffled, last batch kept as ClustPy does),
pretrain `--init-epochs` epochs, and run k-means (n_init=10) on its embedding.
This AE and k-means result are the starting point of every timed run.

Commands and what their timed region holds:
- {"cmd": "pretrain", "epochs": E}: `ae.fit(n_epochs=E, ...)` on a deep copy of
  the AE (copy untimed). Inside: Adam creation, E epochs of ClustPy's batch loop
  (dataloader, forward, MSE, loss.item(), backward, step), tqdm.
- {"cmd": "cluster", "method": "dec"|"idec"|"dcn"|"dkm", "epochs": E}: the
  algorithm's `_<ALG>_Module.fit(...)` for E epochs, exactly what the public
  `DEC/IDEC/DCN/DKM.fit` calls between its k-means initialisation and its final
  prediction. The AE copy, the module (from the k-means centers) and the Adam
  optimiser are built before the clock starts, as in `clustpy.deep.dec._dec`.
- {"cmd": "sgemm", "size": n, "repeats": r}: best time of an (n, n) float32
  torch matmul.
- {"cmd": "quit"}.
"""
import argparse
import copy
import importlib.metadata
import json
import sys
import time

import numpy as np
import torch


def import_clustpy():
    """Import clustpy.deep with PyPI's torchvision next to torch's CPU wheel.

    PyPI only has CUDA builds of torchvision; their C++ ops cannot load
    against torch's CPU build, and torchvision 0.28's import then fails when it
    registers a fake kernel for `torchvision::nms`, the one registration not
    guarded by `extension._has_ops()`. ClustPy imports torchvision only for
    data augmentation, which the benchmark does not use. Declaring the two
    unguarded op schemas lets the import succeed; calling them would still
    fail. Nothing that is timed goes through torchvision.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_clustpy.keep = lib  # the schemas live as long as the library object
    import clustpy.deep  # noqa: F401


def reply(obj):
    print("RESULT " + json.dumps(obj), flush=True)


class Worker:
    def __init__(self, args):
        from clustpy.deep._data_utils import get_train_and_test_dataloader
        from clustpy.deep._encoding_utils import encode_batchwise
        from clustpy.deep.neural_networks import FeedforwardAutoencoder
        from sklearn.cluster import KMeans

        self.args = args
        self.device = torch.device(args.device)
        x = np.load(args.data).astype(np.float32)
        torch.manual_seed(args.seed)
        self.trainloader, self.testloader, _ = get_train_and_test_dataloader(x, args.batch_size)
        ae = FeedforwardAutoencoder(layers=[x.shape[1], 500, 500, 2000, 10],
                                    activation_fn=torch.nn.ReLU, random_state=args.seed).to(self.device)
        if args.init_epochs > 0:
            ae = self.pretrain(ae, args.init_epochs)
        self.ae = ae
        z = encode_batchwise(self.testloader, ae)
        km = KMeans(n_clusters=args.n_clusters, n_init=10, random_state=args.seed).fit(z)
        self.init_labels = km.labels_.astype(np.int32)
        self.init_centers = km.cluster_centers_.astype(np.float32)

    def pretrain(self, ae, epochs):
        from clustpy.deep._utils import mean_squared_error
        return ae.fit(n_epochs=epochs, optimizer_params={"lr": self.args.pretrain_lr},
                      dataloader=self.trainloader, optimizer_class=torch.optim.Adam,
                      ssl_loss_fn=mean_squared_error)

    def time_pretrain(self, epochs):
        ae = copy.deepcopy(self.ae)
        synchronize()
        t0 = time.perf_counter()
        self.pretrain(ae, epochs)
        synchronize()
        return time.perf_counter() - t0

    def time_cluster(self, method, epochs):
        """Build what `clustpy.deep.<alg>._<alg>` builds after its k-means, then time the module's fit."""
        from clustpy.deep._utils import mean_squared_error
        from clustpy.deep.dcn import _DCN_Module
        from clustpy.deep.dec import _DEC_Module
        from clustpy.deep.dkm import _DKM_Module

        a, ae = self.args, copy.deepcopy(self.ae)
        if method in ("dec", "idec"):
            module = _DEC_Module(self.init_centers, alpha=1.0).to(self.device)
            params = list(ae.parameters()) + list(module.parameters())
            # DEC: clustering loss only; IDEC: reconstruction + gamma * KL
            weights = (1.0, 0.0) if method == "dec" else (a.idec_gamma, 1.0)
        elif method == "dcn":
            module = _DCN_Module(self.init_labels, self.init_centers).to_device(self.device)
            params = list(ae.parameters())  # DCN moves its centers by its own rule
            weights = (a.dcn_lambda, 1.0)
        elif method == "dkm":
            module = _DKM_Module(self.init_centers, alphas=(a.dkm_alpha,)).to(self.device)
            params = list(ae.parameters()) + list(module.parameters())
            weights = (1.0, 1.0)
        else:
            raise ValueError(f"unknown method {method!r}")
        optimizer = torch.optim.Adam(params, lr=a.cluster_lr)
        fit_args = (self.device, optimizer, mean_squared_error, *weights)  # (clustering, ssl) loss weights
        synchronize()
        t0 = time.perf_counter()
        if method == "dcn":
            module.fit(ae, self.trainloader, self.testloader, epochs, *fit_args)
        else:
            module.fit(ae, self.trainloader, epochs, *fit_args)
        synchronize()
        return time.perf_counter() - t0


def synchronize():
    """Wait for queued GPU work, so that a timer read after it counts it (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sgemm_seconds(size, repeats, device):
    a = torch.rand(size, size, dtype=torch.float32, device=device)
    b = torch.rand(size, size, dtype=torch.float32, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help=".npy file: the driver's preprocessed (N, d) float32 array")
    ap.add_argument("--n-clusters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--cluster-lr", type=float, default=1e-4)
    ap.add_argument("--init-epochs", type=int, default=1, help="untimed pretraining before k-means")
    ap.add_argument("--idec-gamma", type=float, default=0.1)
    ap.add_argument("--dcn-lambda", type=float, default=0.05)
    ap.add_argument("--dkm-alpha", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, or cuda on a GPU machine")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import_clustpy()
    t0 = time.perf_counter()
    worker = Worker(args)
    versions = {name: importlib.metadata.version(name) for name in ("torch", "clustpy", "torchvision", "numpy")}
    reply({"ready": True, "setup_seconds": time.perf_counter() - t0, "versions": versions,
           "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
           "device": str(worker.device) + (f" ({torch.cuda.get_device_name()})" if worker.device.type == "cuda" else ""),
           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
           "batches_per_epoch": len(worker.trainloader)})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "pretrain":
            reply({"seconds": worker.time_pretrain(cmd["epochs"])})
        elif cmd["cmd"] == "cluster":
            reply({"seconds": worker.time_cluster(cmd["method"], cmd["epochs"])})
        elif cmd["cmd"] == "sgemm":
            reply({"seconds": sgemm_seconds(cmd["size"], cmd["repeats"], worker.device)})
        else:
            reply({"error": f"unknown command {cmd['cmd']!r}"})


if __name__ == "__main__":
    main()
