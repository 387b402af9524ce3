"""Benchmark: dcjax against ClustPy (PyTorch), seconds per seed-epoch on USPS.

    bash experiments/setup_clustpy_env.sh        # once: ClustPy's own venv, /work/venvs/clustpy
    python experiments/bench_vs_clustpy.py --epochs 3 --repeats 3 \\
        --phases pretrain,dec,idec,dcn,dkm --seeds-list 1,4,16

Writes experiments/results/bench_vs_clustpy.md (section 'results'; with
--smoke, section 'smoke', labelled as a functional check). Smoke settings:
`--smoke --subsample 1000 --epochs 1 --repeats 1 --seeds-list 1,2 --sgemm-size 1024`.

Both sides get the same array: USPS from <data_dir>/usps.npz, z-normalised
channel-wise by `dcjax.data.load_dataset`, saved to a .npy that ClustPy's worker
loads. Same AE (d-500-500-2000-10, ReLU, linear embedding and output layers,
PyTorch's default init), batch 256, Adam lr 1e-3 (pretraining) / 1e-4
(clustering). ClustPy runs in its own venv (`experiments/_clustpy_worker.py`,
started once, driven over stdin/stdout) with torch.set_num_threads(--threads).

Timed regions (everything else, k-means initialisation and final prediction
included, is outside on both sides):
- ClustPy pretraining: `FeedforwardAutoencoder.fit(n_epochs=E)` (optimizer
  creation + E epochs of its loop). Clustering: `_<ALG>_Module.fit(...)` for E
  epochs, the training loop that the public `DEC/IDEC/DCN/DKM.fit` runs between
  its k-means and its final prediction. ClustPy's DataLoader keeps the ragged
  last batch: ceil(N/256) steps per epoch.
- dcjax 'bare': E calls of the jitted `Trainer.pretrain_epoch` /
  `Trainer.cluster_epoch` (1 seed), each followed by `jax.block_until_ready`,
  after a first, untimed call that compiles. Each call also computes the
  full-data embedding (the per-epoch snapshot), which ClustPy does not; dcjax
  drops the ragged last batch: floor(N/256) steps per epoch.
- dcjax 'training only': the same epoch function, jitted inside a wrapper that
  returns only the new state and the losses, so XLA drops the full-data
  embedding: the work ClustPy's loop does, and the like-for-like ratio.
- dcjax 'pipeline': `dcjax.train._run_phase` for `checkpoint.resume_every` (10)
  epochs, the per-epoch loop of `train.train_and_evaluate`: the same epoch calls
  plus fetching the losses, the records.jsonl line and the asynchronous orbax
  saves of model state and snapshot after every epoch and of the full state
  (optimiser included) at the last, then waiting for the last save: the mix of
  a long run. Target: pipeline <= 1.15x bare.

Every repetition starts both sides from the same state (after one untimed
pretraining epoch, and for clustering its k-means result). ClustPy and dcjax
alternate (ClustPy, dcjax for one phase; dcjax, ClustPy for the next; ...), so a
drift in machine load hits both. Reported: per-repetition ratio ClustPy/dcjax,
min-median-max. dcjax runs with config.seed_parallelism (auto: lax.map on one CPU).
Seed scaling: one launch of S seeds under vmap and under loop, bare epochs.
GFLOP/s counts the AE's training matmuls: forward 2*rows*sum(in*out) over the
8 layers, backward twice that (the per-epoch embedding is not counted).
"""
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dcjax import checkpointing, data, train  # noqa: E402
from dcjax.config import make_config  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "bench_vs_clustpy.md"
WORKER = ROOT / "experiments" / "_clustpy_worker.py"
DEFAULT_VENV = os.environ.get("CLUSTPY_VENV", "/work/venvs/clustpy")
CLUSTERING = ("dec", "idec", "dcn", "dkm")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="alternating ClustPy/dcjax repetitions")
    ap.add_argument("--phases", default="pretrain,dec,idec,dcn,dkm")
    ap.add_argument("--seeds-list", default="1,4,16", help="seeds per launch for the dcjax scaling table")
    ap.add_argument("--seed-parallelism", default="auto", choices=("auto", "vmap", "loop"),
                    help="dcjax's config.seed_parallelism for the ClustPy comparison (auto = loop on one CPU)")
    ap.add_argument("--scaling-parallelism", default="vmap,loop",
                    help="seed_parallelism settings the dcjax scaling table is measured under")
    ap.add_argument("--scaling-method", default="dec", choices=CLUSTERING,
                    help="clustering method of the scaling table (pretraining is always in it)")
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--subsample", type=int, default=0, help="stratified subset of this many rows (0 = all)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for ClustPy")
    ap.add_argument("--sgemm-size", type=int, default=4096)
    ap.add_argument("--sgemm-repeats", type=int, default=5)
    ap.add_argument("--no-pipeline", action="store_true", help="skip the dcjax pipeline (checkpointing) timing")
    ap.add_argument("--pipeline-epochs", type=int, default=0,
                    help="epochs per pipeline measurement (0: checkpoint.resume_every, so that each "
                         "measurement holds one full-state save, as in a long run)")
    ap.add_argument("--clustpy-python", default=str(Path(DEFAULT_VENV) / "bin" / "python"))
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench_vs_clustpy"),
                    help="scratch space for the pipeline's checkpoints (emptied after each measurement)")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--smoke", action="store_true",
                    help="write to the 'smoke' section, labelled as a functional check, not a measurement")
    ap.add_argument("--device", default="cpu",
                    help="ClustPy's torch device (cpu, or cuda on a GPU machine); dcjax uses jax's default backend")
    ap.add_argument("--section", default="",
                    help="results section to write (default: 'results', or 'smoke' with --smoke; 'gpu' for a GPU run)")
    args = ap.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    args.seeds_list = [int(s) for s in args.seeds_list.split(",") if s]
    args.scaling_parallelism = [m for m in args.scaling_parallelism.split(",") if m]
    unknown = [p for p in args.phases if p != "pretrain" and p not in CLUSTERING]
    if unknown:
        ap.error(f"unknown phase(s) {unknown}; known: pretrain, {', '.join(CLUSTERING)}")
    return args


# ---------------------------------------------------------------------------
# ClustPy, in its own venv


class ClustPyWorker:
    """The worker process: one JSON command per line in, `RESULT {json}` lines out."""

    def __init__(self, python: str, data_path: Path, n_clusters: int, args, config, log_path: Path):
        if not Path(python).exists():
            raise SystemExit(f"no ClustPy venv at {python}: run `bash experiments/setup_clustpy_env.sh` "
                             f"(or pass --clustpy-python)")
        self.log_path = log_path
        self.log = open(log_path, "w")
        cmd = [python, str(WORKER), "--data", str(data_path), "--n-clusters", str(n_clusters),
               "--threads", str(args.threads), "--batch-size", str(config.batch_size),
               "--pretrain-lr", str(config.pretrain.learning_rate),
               "--cluster-lr", str(config.clustering.learning_rate),
               "--idec-gamma", str(config.idec.gamma), "--dcn-lambda", str(config.dcn.lambda_clust),
               "--dkm-alpha", str(config.dkm.alpha), "--init-epochs", "1", "--device", args.device]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                out = json.loads(line[len("RESULT "):])
                if "error" in out:
                    raise RuntimeError(f"ClustPy worker: {out['error']}")
                return out
        self.log.flush()
        tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"ClustPy worker exited (code {self.proc.wait()}); its stderr ends with:\n{tail}")

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


def run_clustpy(worker: ClustPyWorker, phase: str, epochs: int) -> float:
    if phase == "pretrain":
        return worker.call(cmd="pretrain", epochs=epochs)["seconds"]
    return worker.call(cmd="cluster", method=phase, epochs=epochs)["seconds"]


# ---------------------------------------------------------------------------
# dcjax


def dcjax_config(algorithm: str, args, seeds: int, parallelism: str = ""):
    config = make_config(algorithm, args.dataset)
    config.dataset.subsample = args.subsample
    config.seeds = seeds
    config.seed_parallelism = train.resolve_seed_parallelism(parallelism or args.seed_parallelism)
    config.progress = False
    return config


class DcjaxSide:
    """Compiled trainers for one number of seeds, and their starting states.

    The pretraining state after one (compiling, untimed) epoch is the start of
    every pretraining measurement and, after k-means, of every clustering one.
    """

    def __init__(self, x: jax.Array, n_clusters: int, args, seeds: int, parallelism: str = ""):
        self.x, self.k, self.args, self.seeds = x, n_clusters, args, seeds
        self.parallelism = parallelism
        self.trainers, self.start, self.first_call, self.training_only = {}, {}, {}, {}
        n, d = x.shape
        config = dcjax_config("dec", args, seeds, parallelism)
        self.keys = train.seed_keys(config)
        self.trainers["pretrain"] = train.make_train(config, n, d, n_clusters)
        trainer = self.trainers["pretrain"]
        state = trainer.init_pretrain(self.keys)
        t0 = time.perf_counter()
        state, out = trainer.pretrain_epoch(state, x)
        jax.block_until_ready((state, out))
        self.first_call["pretrain"] = time.perf_counter() - t0
        self.start["pretrain"] = state

    def prepare(self, method: str):
        """Trainer, k-means start (untimed) and compiled clustering epoch of `method`."""
        if method in self.start:
            return
        n, d = self.x.shape
        trainer = train.make_train(dcjax_config(method, self.args, self.seeds, self.parallelism), n, d, self.k)
        state, snap = trainer.init_clustering(self.start["pretrain"]["params"], self.keys, self.x)
        jax.block_until_ready((state, snap))
        t0 = time.perf_counter()
        jax.block_until_ready(trainer.cluster_epoch(state, self.x))
        self.first_call[method] = time.perf_counter() - t0
        self.trainers[method], self.start[method] = trainer, state

    def epoch_fn(self, phase: str):
        trainer = self.trainers[phase]
        return trainer.pretrain_epoch if phase == "pretrain" else trainer.cluster_epoch

    def training_only_fn(self, phase: str):
        """The epoch without its snapshot: outputs nobody reads are dead code to
        XLA, so the full-data embedding is not computed (fewer matmuls in the HLO)."""
        if phase not in self.training_only:
            epoch_fn = self.epoch_fn(phase)
            fn = jax.jit(lambda state, x: (lambda s, out: (s, out["losses"]))(*epoch_fn(state, x)))
            jax.block_until_ready(fn(self.start[phase], self.x))   # compile, untimed
            self.training_only[phase] = fn
        return self.training_only[phase]

    def time_bare(self, phase: str, epochs: int, training_only: bool = False) -> float:
        self.prepare(phase)
        epoch_fn = self.training_only_fn(phase) if training_only else self.epoch_fn(phase)
        state = self.start[phase]
        t0 = time.perf_counter()
        for _ in range(epochs):
            state, out = epoch_fn(state, self.x)
            jax.block_until_ready((state, out))
        return time.perf_counter() - t0

    def time_pipeline(self, phase: str, epochs: int, workdir: Path, background: bool = True) -> float:
        """train_and_evaluate's per-epoch loop (`train._run_phase`) with real
        checkpoints, its writer in the background (the default) or inline."""
        self.prepare(phase)
        state = self.start[phase]
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            cfg = self.trainers[phase].config.checkpoint
            ckpts = checkpointing.PhaseCheckpoints(
                Path(tmp), "pretrain" if phase == "pretrain" else "clustering",
                max_to_keep=int(cfg.max_to_keep), keep_period=int(cfg.keep_period), compress=bool(cfg.compress),
                resume_every=int(cfg.resume_every))
            done = int(np.asarray(state["epoch"]).reshape(-1)[0])
            t0 = time.perf_counter()
            train._run_phase(phase, ckpts, state, self.epoch_fn(phase), done + epochs, self.x, progress=False,
                             background=background)
            ckpts.wait()
            seconds = time.perf_counter() - t0
            ckpts.close()
        return seconds


# ---------------------------------------------------------------------------
# Peak matmul throughput and the AE's FLOPs


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sgemm_gflops(size: int, repeats: int, worker: ClustPyWorker) -> dict:
    """Best-of-`repeats` GFLOP/s of an (n, n) float32 matmul in numpy, jax and torch."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    flops = 2.0 * size ** 3
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    matmul = jax.jit(jnp.matmul)
    matmul(ja, jb).block_until_ready()
    seconds = {
        "numpy": best_seconds(lambda: a @ b, repeats),
        "jax": best_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats),
        "torch": worker.call(cmd="sgemm", size=size, repeats=repeats)["seconds"],
    }
    return {name: flops / s / 1e9 for name, s in seconds.items()}


def ae_layer_sizes(d: int, config) -> list[tuple[int, int]]:
    enc = [d, *config.model.hidden_dims, config.model.embedding_dim]
    sizes = list(zip(enc[:-1], enc[1:]))
    return sizes + [(o, i) for i, o in reversed(sizes)]


def pretrain_flops_per_epoch(rows: int, d: int, config) -> float:
    """Matmul FLOPs of one pretraining epoch: forward 2*rows*sum(in*out), backward 2x forward."""
    return 3 * 2.0 * rows * sum(i * o for i, o in ae_layer_sizes(d, config))


# ---------------------------------------------------------------------------
# Report


def spread(values) -> str:
    v = np.asarray(values, float)
    return f"{v.min():.2f} – {np.median(v):.2f} – {v.max():.2f}"


def machine_info() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "load": os.getloadavg()[0]}


HEADER = """# dcjax vs ClustPy: seconds per seed-epoch (USPS)

Written by `experiments/bench_vs_clustpy.py` (its docstring has the details). Set-up, once:
`bash experiments/setup_clustpy_env.sh` builds ClustPy's own venv in /work/venvs/clustpy
(`pip install torch==2.13.0`, the local CPU wheel, then `pip install clustpy` with torch held
at that version; no CUDA package). It took 75-83 s and 1.4 GB (torch 754 MB) on a 2-core
machine under load. Full run:

    python experiments/bench_vs_clustpy.py --epochs 3 --repeats 3 --phases pretrain,dec,idec,dcn,dkm --seeds-list 1,4,16

What is timed (k-means initialisation and final prediction are outside on both sides):

- **ClustPy pretraining**: `FeedforwardAutoencoder([256, 500, 500, 2000, 10], ReLU).fit(n_epochs=E)`:
  Adam creation plus E epochs of ClustPy's loop (DataLoader, forward, MSE, `loss.item()`, backward, step).
- **ClustPy DEC/IDEC/DCN/DKM**: `_<ALG>_Module.fit(...)` for E epochs: the training loop that the
  public `DEC/IDEC/DCN/DKM.fit` runs between its k-means and its final prediction; module and
  optimiser are built before the clock starts, as `clustpy.deep.<alg>._<alg>` builds them.
- **dcjax bare**: E calls of the jitted `Trainer.pretrain_epoch` / `Trainer.cluster_epoch`, each
  followed by `jax.block_until_ready`, compiled beforehand. Each call also embeds the whole data
  set (the per-epoch snapshot), work ClustPy does not do.
- **dcjax training only**: the same jitted epoch inside a wrapper that returns only the state and
  the losses, so XLA drops the snapshot embedding: the same work as ClustPy's loop (the
  like-for-like ratio).
- **dcjax pipeline**: `train._run_phase`, the per-epoch loop of `train.train_and_evaluate`, for
  `checkpoint.resume_every` (10) epochs: the same calls plus fetching the losses, the records.jsonl
  line and the asynchronous orbax saves of the model state (params, centers) and the snapshot after
  every epoch and of the full state (optimiser included) at the tenth, waiting for the last save:
  the mix of a long run. Target: pipeline <= 1.15x bare.

ClustPy and dcjax alternate within one run (ClustPy then dcjax for one phase, dcjax then ClustPy
for the next, ...), so load drifts hit both; each repetition starts from the same state. Both
use the same cores (torch.set_num_threads, and the process pinned to that many CPUs).
ClustPy keeps the ragged last batch (ceil(N/256) steps per epoch), dcjax drops it
(floor(N/256)). PyPI's torchvision is a CUDA build whose C++ ops cannot load next to torch's
CPU wheel; ClustPy imports it only for data augmentation, so the worker declares the two op
schemas torchvision's import needs (see `experiments/_clustpy_worker.py`); nothing timed uses it.

"""


def write_section(path: Path, section: str, body: str):
    """Replace one marked section of the results file, keeping the others."""
    sections = {"results": "_Not measured yet: run the command at the top on a quiet machine._\n",
                "notes": "", "gpu": "", "gpu_notes": "", "smoke": ""}  # '*notes' are hand-written, only ever kept
    if path.exists():
        text = path.read_text()
        for name in sections:
            m = re.search(rf"<!-- BEGIN {name} -->\n(.*?)<!-- END {name} -->\n", text, re.S)
            if m:
                sections[name] = m.group(1)
    sections[section] = body
    head = HEADER
    parts = [head] + [f"<!-- BEGIN {name} -->\n{sections[name]}<!-- END {name} -->\n\n"
                      for name in ("results", "notes", "gpu", "gpu_notes", "smoke")
                      if sections[name] or name == "results"]
    path.write_text("".join(parts).rstrip() + "\n")


def report(args, meta: dict, comparison: dict, scaling: list, peaks: dict) -> str:
    title = ("## Smoke run: functional check under background load, NOT a measurement\n\n"
             "Tiny settings on a machine busy with other jobs: these numbers only show that every "
             "part of the benchmark runs. Do not quote them.\n\n"
             if args.smoke else "## Results on a GPU\n\n" if args.section == "gpu" else "## Results\n\n")
    cmd = "python " + shlex.join(["experiments/bench_vs_clustpy.py", *sys.argv[1:]])
    v = meta["versions"]
    lines = [title, f"Command: `{cmd}`\n\n",
             f"Date {date.today().isoformat()}; {meta['machine']['cpu']}, {meta['machine']['cores']} cores "
             f"visible; 1-min load average {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end; "
             f"total wall time {meta['wall']:.0f} s.\n\n",
             f"Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, optax {v['optax']} "
             f"(Python {platform.python_version()}); torch {v['torch']}, clustpy {v['clustpy']}, "
             f"torchvision {v['torchvision']} (Python {v['clustpy_python']}, torch threads "
             f"{v['torch_threads']}). XLA uses its default CPU thread pool, over the {meta['machine']['cores']} CPUs this process is pinned to.\n\n",
             f"Devices: dcjax on {meta['jax_devices']} (jax default matmul precision: "
             f"{meta['jax_precision']}); ClustPy on {v['clustpy_device']} (torch allow_tf32 for matmuls: "
             f"{v['clustpy_tf32']}).\n\n",
             f"Data: {meta['data']}. Epochs per measurement: {args.epochs}; repetitions: {args.repeats}. "
             f"Steps per epoch: ClustPy {meta['clustpy_batches']} (keeps the ragged last batch), dcjax "
             f"{meta['dcjax_batches']} (drops it). Untimed: dcjax compile + first epoch, ClustPy one "
             f"warm-up call per phase, k-means on both sides.\n\n"]

    if comparison:
        lines += [f"### ClustPy vs dcjax, 1 seed, seconds per epoch (dcjax seed_parallelism: "
                  f"{meta['parallelism']})\n\n",
                  "| phase | ClustPy s/epoch (median) | dcjax training only s/epoch (median) | ratio ClustPy/dcjax, "
                  "same work, min – median – max | dcjax bare s/epoch (median) | ratio ClustPy/dcjax bare min – "
                  "median – max | dcjax pipeline s/epoch (median) | pipeline/bare min – median – max |\n",
                  "|---|---:|---:|---:|---:|---:|---:|---:|\n"]
        for phase, r in comparison.items():
            cp, bare, only = np.asarray(r["clustpy"]), np.asarray(r["bare"]), np.asarray(r["train_only"])
            pipe = np.asarray(r["pipeline"]) if r["pipeline"] else None
            lines.append(f"| {phase} | {np.median(cp):.3f} | {np.median(only):.3f} | {spread(cp / only)} | "
                         f"{np.median(bare):.3f} | {spread(cp / bare)} | "
                         + (f"{np.median(pipe):.3f} | {spread(pipe / bare)} |\n" if pipe is not None
                            else "— | — |\n"))
        lines.append("\nSame work: ClustPy's loop against dcjax's epoch without the full-data embedding of the "
                     "snapshot. Bare: dcjax's epoch as `train_and_evaluate` runs it, snapshot embedding included.\n")
        lines.append("\nRaw seconds per epoch, per repetition: "
                     + "; ".join(f"{p}: ClustPy {[round(s, 3) for s in r['clustpy']]}, dcjax "
                                 f"{[round(s, 3) for s in r['bare']]}, training only "
                                 f"{[round(s, 3) for s in r['train_only']]}"
                                 + (f", pipeline {[round(s, 3) for s in r['pipeline']]}" if r["pipeline"] else "")
                                 for p, r in comparison.items()) + ".\n\n")
        lines.append("dcjax first call (compile + 1 epoch, 1 seed, s): "
                     + ", ".join(f"{p} {s:.1f}" for p, s in meta["first_call"].items()) + ".\n\n")

    lines += [f"### dcjax seed scaling (one launch; {args.epochs} epoch(s) per measurement)\n\n",
              "vmap: one batched program over the seeds; loop: `lax.map`, the one-seed program once per seed "
              "(`config.seed_parallelism`).\n\n",
              "| seeds | seed_parallelism | phase | s per launch-epoch | seed-epochs/s | GFLOP/s (AE matmuls) | "
              "% of numpy sgemm | % of jax sgemm | first call (compile + 1 epoch) s |\n",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|\n"]
    for row in scaling:
        gflops = row.get("gflops")
        lines.append(f"| {row['seeds']} | {row['parallelism']} | {row['phase']} | {row['seconds']:.3f} | "
                     f"{row['seeds'] / row['seconds']:.3f} | "
                     + (f"{gflops:.1f} | {100 * gflops / peaks['numpy']:.0f}% | {100 * gflops / peaks['jax']:.0f}% | "
                        if gflops else "— | — | — | ")
                     + f"{row['first_call']:.1f} |\n")
    lines += [f"\nPretraining epoch = {meta['pretrain_gflop']:.1f} GFLOP per seed "
              f"({meta['dcjax_batches']} x 256 rows; forward 2·rows·Σ in·out over the 8 layers, backward 2x).\n\n",
              f"sgemm peak, ({args.sgemm_size}, {args.sgemm_size}) float32 matmul, best of {args.sgemm_repeats}: "
              f"numpy {peaks['numpy']:.1f} GFLOP/s, jax {peaks['jax']:.1f} GFLOP/s, "
              f"torch {peaks['torch']:.1f} GFLOP/s.\n"]
    return "".join(lines)


# ---------------------------------------------------------------------------


def pin_cpus(n: int):
    """Run this process (and the ClustPy worker it starts) on the first n visible CPUs,
    before jax creates its thread pool, so both frameworks get the same cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > n:
        os.sched_setaffinity(0, cpus[:n])


def main(argv=None):
    args = parse_args(argv)
    pin_cpus(args.threads)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    config = dcjax_config("dec", args, 1)
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    x_np = np.ascontiguousarray(dataset.x, np.float32)
    n, d = x_np.shape
    x = jnp.asarray(x_np)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        np.save(Path(tmp) / "x.npy", x_np)
        print(f"data {args.dataset}: {n} x {d}, {k} clusters; starting ClustPy worker", flush=True)
        worker = ClustPyWorker(args.clustpy_python, Path(tmp) / "x.npy", k, args, config, workdir / "clustpy_worker.log")
        try:
            peaks = sgemm_gflops(args.sgemm_size, args.sgemm_repeats, worker)
            print("sgemm GFLOP/s:", {name: round(g, 1) for name, g in peaks.items()}, flush=True)

            # Warm-up: compile dcjax, run each ClustPy phase once.
            side = DcjaxSide(x, k, args, seeds=1)
            for phase in args.phases:
                if phase != "pretrain":
                    side.prepare(phase)
                side.training_only_fn(phase)
                run_clustpy(worker, phase, 1)

            comparison = {p: {"clustpy": [], "bare": [], "train_only": [], "pipeline": []} for p in args.phases}
            for rep in range(args.repeats):
                for i, phase in enumerate(args.phases):
                    r = comparison[phase]
                    order = ("clustpy", "dcjax") if (rep + i) % 2 == 0 else ("dcjax", "clustpy")
                    for who in order:
                        if who == "clustpy":
                            r["clustpy"].append(run_clustpy(worker, phase, args.epochs) / args.epochs)
                        else:
                            r["bare"].append(side.time_bare(phase, args.epochs) / args.epochs)
                            r["train_only"].append(side.time_bare(phase, args.epochs, True) / args.epochs)
                            if not args.no_pipeline:
                                e = args.pipeline_epochs or int(config.checkpoint.resume_every)
                                r["pipeline"].append(side.time_pipeline(phase, e, workdir) / e)
                    print(f"rep {rep + 1}/{args.repeats} {phase}: ClustPy {r['clustpy'][-1]:.3f} s/epoch, "
                          f"dcjax {r['bare'][-1]:.3f} (training only {r['train_only'][-1]:.3f})"
                          + (f", pipeline {r['pipeline'][-1]:.3f}" if r["pipeline"] else ""),
                          flush=True)
            info = worker.info
        finally:
            worker.close()

    flops = pretrain_flops_per_epoch((n // config.batch_size) * config.batch_size, d, config)
    scaling = []
    for seeds in args.seeds_list:
        for mode in args.scaling_parallelism:
            s_side = (side if seeds == 1 and mode == config.seed_parallelism
                      else DcjaxSide(x, k, args, seeds, mode))
            for phase in ("pretrain", args.scaling_method):
                seconds = s_side.time_bare(phase, args.epochs) / args.epochs
                row = {"seeds": seeds, "parallelism": mode, "phase": phase, "seconds": seconds,
                       "first_call": s_side.first_call[phase]}
                if phase == "pretrain":
                    row["gflops"] = seeds * flops / seconds / 1e9
                scaling.append(row)
                print(f"{seeds} seed(s), {mode}, {phase}: {seconds:.3f} s per launch-epoch", flush=True)

    import flax
    import jaxlib
    import optax
    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "optax": optax.__version__, **info["versions"], "clustpy_python": info["python"],
                "torch_threads": info["torch_threads"], "clustpy_device": info.get("device", "cpu"),
                "clustpy_tf32": info.get("tf32_matmul")}
    data_desc = (f"{args.dataset} ({n} x {d}" + (f", stratified subsample of {args.subsample} rows" if args.subsample else "")
                 + "), z-normalised channel-wise by dcjax.data.load_dataset; the same float32 array for both")
    meta = {"versions": versions, "machine": machine_info(), "load_start": load_start,
            "load_end": os.getloadavg()[0], "wall": time.perf_counter() - t_start, "data": data_desc,
            "clustpy_batches": info["batches_per_epoch"], "dcjax_batches": n // config.batch_size,
            "first_call": side.first_call, "pretrain_gflop": flops / 1e9,
            "parallelism": config.seed_parallelism,
            "jax_devices": ", ".join(sorted({f"{d.platform} ({d.device_kind})" for d in jax.devices()})),
            "jax_precision": jax.config.jax_default_matmul_precision or "default"}
    body = report(args, meta, comparison, scaling, peaks)
    write_section(Path(args.output), args.section or ("smoke" if args.smoke else "results"), body)
    print(body)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
