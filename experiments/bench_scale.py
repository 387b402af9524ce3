"""The reading side at the user's scale: MNIST (70,000 x 784), 10 seeds.

    python experiments/bench_scale.py --root /tmp/scale [--seeds 10] [--small RUN] [--steps train,small,read,disk]

Writes experiments/results/scale.md (and scale.json beside it), step by step,
so an interrupted bench keeps what it measured. Every command runs in a
subprocess under `/usr/bin/time -v` (wall time, peak RSS):

1. Training, measured: DEC on MNIST with all seeds for 2 + 2 epochs. The
   second epoch of each phase (no compilation in it) gives the seconds per
   epoch, from records.jsonl; the full protocol's training time (100
   pretraining + 150 clustering epochs) is estimated from them. The full
   launch does not fit a 2-core CPU in a session (hours), so:
2. A launch of the true shape, synthesised: 100 pretraining and 151
   clustering snapshots of 10 seeds x 70,000 points, written through
   dcjax's own checkpointing (the same layout and files as training), the
   embeddings drifting from the short run's final ones towards them, each
   epoch's assignment the nearest of that run's centres, and records with
   losses. It is then read as any run is: `dcjax.select` (scoring
   included), `dcjax.select` again with another launch selector, and
   `dcjax.report`.
3. Disk: du of both runs, and dcjax's own estimate (`train.disk_plans`) of
   the full launch's checkpoints for each fixed-k algorithm.

The numbers are those of the machine it runs on, loaded or not; scale.md
says which.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
GB = 1e9


def timed(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v: wall seconds, peak RSS (GB), exit status."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              env=os.environ | {"PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    text = log.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"command": " ".join(cmd), "seconds": round(wall, 1), "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2)
            if rss else None, "exit": proc.returncode}


def du(path: Path) -> int:
    return int(subprocess.check_output(["du", "-sb", str(path)]).split()[0])


def load_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(path: Path, state: dict):
    path.write_text(json.dumps(state, indent=2) + "\n")


# ------------------------------------------------------------ 1. real training, short

def short_training(root: Path, seeds: int) -> dict:
    workdir = root / "mnist_dec_short"
    shutil.rmtree(workdir, ignore_errors=True)
    load = round(os.getloadavg()[0], 1)
    cmd = [sys.executable, "-m", "dcjax.main", "--config", str(REPO / "configs" / "dec_mnist.py"),
           f"--config.seeds={seeds}", "--config.pretrain.epochs=2", "--config.clustering.epochs=2",
           "--config.progress=False", f"--workdir={workdir}"]
    out = timed(cmd, root, root / "train.log")
    from dcjax import checkpointing
    per_epoch = {p: checkpointing.load_records(workdir, p)[-1]["seconds"] for p in checkpointing.PHASES}
    out |= {"seconds_per_epoch": per_epoch, "bytes": du(workdir), "load_average_at_start": load,
            "full_protocol_hours": round((100 * per_epoch["pretrain"] + 150 * per_epoch["clustering"]) / 3600, 2)}
    return out


# ------------------------------------------------------------ 2. a launch of the true shape

def synthesise(root: Path, pretrain_epochs: int = 100, clustering_epochs: int = 150) -> Path:
    """A run with the full protocol's epochs, from the short run's last snapshot."""
    import jax.numpy as jnp
    from dcjax import checkpointing

    short = root / "mnist_dec_short"
    workdir = root / "mnist_dec_full_shape"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = json.loads((short / "config.json").read_text())
    config["pretrain"]["epochs"], config["clustering"]["epochs"] = pretrain_epochs, clustering_epochs
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(short / "run.json", workdir / "run.json")
    last = checkpointing.load_snapshot(short, 2, "clustering")
    z_end = np.asarray(last["embedding"], np.float32)            # (S, N, e)
    centers = np.asarray(last["centers"], np.float32)            # (S, k, e)
    s, n, e = z_end.shape
    k = centers.shape[1]
    rng = np.random.default_rng(0)
    start = z_end + rng.normal(scale=float(z_end.std()), size=z_end.shape).astype(np.float32)
    batches = n // int(config["batch_size"])
    dtype = np.dtype(config["checkpoint"]["embedding_dtype"])
    state = {"epoch": np.zeros((s,), np.int32)}                   # resume points: a stand-in state
    for phase, epochs, first in (("pretrain", pretrain_epochs, 1), ("clustering", clustering_epochs, 0)):
        ckpts = checkpointing.PhaseCheckpoints.from_settings(workdir, phase, _settings(config))
        for epoch in range(first, epochs + 1):
            w = epoch / epochs
            z = ((1 - w) * start + w * z_end).astype(np.float32)
            snap = {"embedding": z.astype(dtype)}
            losses = {"total" if phase == "clustering" else "reconstruction":
                      np.abs(1.0 / (1 + epoch) + 0.01 * rng.normal(size=(s, batches)))}
            record = {"epoch": epoch, "seconds": 0.0, "loss": {name: v.mean(axis=1).tolist() for name, v in losses.items()},
                      "batch_loss": {name: v.tolist() for name, v in losses.items()}}
            if phase == "clustering":
                d2 = np.stack([((z[i][:, None, :] - centers[i][None]) ** 2).sum(-1) for i in range(s)])
                assignments = d2.argmin(-1).astype(np.int32)
                sizes = np.stack([np.bincount(a, minlength=k) for a in assignments]).astype(np.int32)
                snap |= {"assignments": assignments, "centers": centers, "cluster_sizes": sizes,
                         "active": np.ones((s, k), bool)}
                record |= {"cluster_sizes": sizes.tolist(), "diverged": [False] * s}
                if epoch == 0:
                    record = None
            ckpts.save(epoch, state | {"epoch": np.full((s,), epoch, np.int32)}, snap, record, last=epoch == epochs)
        ckpts.wait()
        ckpts.close()
    del jnp
    return workdir


def _settings(config: dict):
    import ml_collections
    return ml_collections.ConfigDict(config["checkpoint"])


# ------------------------------------------------------------ 3. disk, as dcjax estimates it

def disk_estimates(seeds: int) -> list[dict]:
    from dcjax import config as config_lib, train
    rows = []
    for algorithm in ("ae_kmeans", "dec", "dcn", "dkm"):
        for dtype in ("float32", "float16"):
            c = config_lib.make_config(algorithm, "mnist")
            c.seeds, c.checkpoint.embedding_dtype = seeds, dtype
            plans = train.planned_disk(c, 70_000, 784, 10)
            rows.append({"algorithm": algorithm, "embedding_dtype": dtype,
                         "snapshots_gb": round(sum(p["snapshots"] for p in plans.values()) / GB, 2),
                         "resume_points_gb": round(sum(p["resume points"] for p in plans.values()) / GB, 2),
                         "total_gb": round(sum(v for p in plans.values() for v in p.values()) / GB, 2)})
    return rows


# ------------------------------------------------------------ the report

def write_markdown(state: dict, path: Path):
    lines = ["# The reading side at MNIST size, 10 seeds", "",
             "Written by `python experiments/bench_scale.py --root <folder>` "
             f"({state.get('date', '?')}, 2 CPU cores shared with other jobs at times: each step gives its load "
             "average). Wall time and peak RSS of each command "
             "from `/usr/bin/time -v`; targets from issue 29.", ""]
    t = state.get("train")
    if t:
        lines += ["## Training (measured, short)", "",
                  f"`{t['command']}`: {t['seconds']} s, peak RSS {t['peak_rss_gb']} GB, {t['bytes'] / GB:.2f} GB on disk "
                  f"(load average {t.get('load_average_at_start', '?')} at its start).",
                  f"Seconds per epoch of all {state['seeds']} seeds (the second epoch of each phase, from records.jsonl): "
                  f"pretraining {t['seconds_per_epoch']['pretrain']:.1f} s, clustering {t['seconds_per_epoch']['clustering']:.1f} s. "
                  f"The full protocol (100 + 150 epochs) would take about **{t['full_protocol_hours']} h** here; "
                  "too long for a session, so the launch below is synthesised at the true shape.", ""]
    reads = state.get("reads", {})
    if reads:
        lines += ["## Reading a launch of the true shape (synthesised: 100 + 151 snapshots of "
                  f"{state['seeds']} seeds x 70,000 points)", "",
                  f"Disk: {state.get('full_shape_bytes', 0) / GB:.2f} GB (snapshots, records, stand-in resume points).", "",
                  "| step | wall (s) | peak RSS (GB) | exit | target | load average after |",
                  "| --- | --- | --- | --- | --- | --- |"]
        hours = (t or {}).get("full_protocol_hours")
        targets = {"select (first, scoring included)": f"<= 15% of training ({0.15 * hours * 3600:.0f} s)" if hours else "",
                   "select (again, --launch-selector consensus)": "<= 60 s", "report": "<= 60 s (a second reading)"}
        for name, r in reads.items():
            lines.append(f"| {name} | {r['seconds']} | {r['peak_rss_gb']} | {r['exit']} | {targets.get(name, '')}; "
                         f"RSS <= 4 GB | {r.get('load_average', '?')} |")
        lines.append("")
    small = state.get("small", {})
    if small:
        lines += ["## The 3,775-row, 5-seed AE+k-means case (MNIST subsample, full protocol)", "",
                  f"Load average at the start: {small.get('load_average_at_start', '?')}. The run was trained "
                  "before run.json existed, so the first select also loads the data set once to learn k.", "",
                  "| step | wall (s) | peak RSS (GB) | exit | target |", "| --- | --- | --- | --- | --- |"]
        for name, r in small.items():
            if not isinstance(r, dict):
                continue
            target = "<= 60 s" if "first" in name else "<= 10 s"
            lines.append(f"| {name} | {r['seconds']} | {r['peak_rss_gb']} | {r['exit']} | {target} |")
        lines.append("")
    disk = state.get("disk")
    if disk:
        lines += ["## Disk of the full launch, as dcjax estimates it before training (`train.disk_plans`)", "",
                  "| algorithm | embeddings | snapshots (GB) | resume points (GB) | total (GB) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['algorithm']} | {r['embedding_dtype']} | {r['snapshots_gb']} | {r['resume_points_gb']} | "
                  f"{r['total_gb']} |" for r in disk]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="a folder with room for ~8 GB")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--small", help="a 5-seed AE+k-means run of 3,775 rows to time select on (copied)")
    ap.add_argument("--steps", default="train,small,read,disk",
                    help="which steps to run (the others keep their numbers in scale.json): train, small, read, disk")
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    state_path = RESULTS / "scale.json"
    state = load_state(state_path) | {"seeds": args.seeds, "date": time.strftime("%Y-%m-%d"),
                                      "machine": f"{os.cpu_count()} CPU cores, load average "
                                                 f"{os.getloadavg()[0]:.1f} at the start"}
    steps = set(args.steps.split(","))
    if "train" in steps:
        state["train"] = short_training(root, args.seeds)
        save_state(state_path, state)
        write_markdown(state, RESULTS / "scale.md")
    if args.small and "small" in steps:
        small = root / "small"
        shutil.rmtree(small, ignore_errors=True)
        shutil.copytree(args.small, small, ignore=shutil.ignore_patterns("scored", "scores.csv", "selection.json",
                                                                         "keep_epochs.json", "selected_labels.npy"))
        state["small"] = {"load_average_at_start": round(os.getloadavg()[0], 1)}
        state["small"]["select (first, scoring included)"] = timed(
            [sys.executable, "-m", "dcjax.select", "--workdir", str(small)], root, root / "small_select1.log")
        state["small"]["select (again, --launch-selector consensus)"] = timed(
            [sys.executable, "-m", "dcjax.select", "--workdir", str(small), "--launch-selector", "consensus"],
            root, root / "small_select2.log")
        save_state(state_path, state)
        write_markdown(state, RESULTS / "scale.md")
    if "read" in steps:
        read_full_shape(root, state, state_path)
    if "disk" in steps:
        state["disk"] = disk_estimates(args.seeds)
        save_state(state_path, state)
    write_markdown(state, RESULTS / "scale.md")
    print((RESULTS / "scale.md").read_text())


def read_full_shape(root: Path, state: dict, state_path: Path):
    workdir = synthesise(root)
    state["full_shape_bytes"] = du(workdir)
    state["reads"] = {}
    steps = [("select (first, scoring included)", ["dcjax.select", "--workdir", str(workdir)]),
             ("select (again, --launch-selector consensus)", ["dcjax.select", "--workdir", str(workdir),
                                                              "--launch-selector", "consensus"]),
             ("report", ["dcjax.report", "--workdir", str(workdir), "--no-umap", "--no-progress"])]
    for i, (name, cmd) in enumerate(steps):
        state["reads"][name] = timed([sys.executable, "-m", *cmd], root, root / f"read{i}.log")
        state["reads"][name]["load_average"] = round(os.getloadavg()[0], 1)
        save_state(state_path, state)
        write_markdown(state, RESULTS / "scale.md")


if __name__ == "__main__":
    main()
