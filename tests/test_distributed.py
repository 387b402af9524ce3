"""Two processes under jax.distributed on localhost (`dcjax.main --distributed`)
train one launch, the seed axis sharded over both; the per-seed results equal a
one-process run of the same seeds, and one process reads the checkpoints."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from dcjax import checkpointing

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config", "configs/dcn_digits.py:smoke", "--config.dataset.subsample=400", "--config.batch_size=64",
        "--config.seeds=2", "--config.pretrain.epochs=2", "--config.clustering.epochs=3",
        "--config.kmeans.n_init=3", "--config.progress=False", "--config.checkpoint.resume_every=2",
        "--config.seed_parallelism=vmap"]  # the batched program, one process or sharded over two


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(workdir: Path, log: str, *extra) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}   # one CPU device each
    return subprocess.Popen([sys.executable, "-m", "dcjax.main", *ARGS, f"--workdir={workdir}", *extra],
                            cwd=REPO, env=env, stdout=open(workdir.parent / log, "w"), stderr=subprocess.STDOUT)


def test_two_processes_equal_one_process_and_write_each_checkpoint_once(tmp_path):
    port = free_port()
    two, one = tmp_path / "two", tmp_path / "one"
    processes = [launch(two, f"process{i}.log", "--distributed", f"--coordinator_address=localhost:{port}",
                        "--num_processes=2", f"--process_id={i}") for i in (0, 1)]
    processes.append(launch(one, "one.log"))      # the one-process run, alongside
    for p in processes:
        assert p.wait(timeout=900) == 0, "\n".join(f.read_text()[-3000:] for f in tmp_path.glob("*.log"))

    # the seed axis was sharded over both processes: each wrote its shard, in orbax's multi-process way
    item = two / "clustering" / "resume" / "3" / "default"
    assert (item / "ocdbt.process_0").is_dir() and (item / "ocdbt.process_1").is_dir()
    # the plain files once
    assert [r["epoch"] for r in checkpointing.load_records(two, "clustering")] == [1, 2, 3]
    assert json.loads((two / "summary.json").read_text())["seeds"] == json.loads((one / "summary.json").read_text())["seeds"]

    # one process (this one) reads them back; a pruned epoch is replayed here, on one device
    assert jax.process_count() == 1
    for phase, epochs in (("pretrain", [1, 2]), ("clustering", [0, 1, 2, 3])):
        assert checkpointing.list_epochs(two, phase) == epochs
        for epoch in epochs:
            a, b = checkpointing.load_snapshot(two, epoch, phase), checkpointing.load_snapshot(one, epoch, phase)
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)
            if phase == "clustering":
                np.testing.assert_array_equal(a["assignments"], b["assignments"])
    assert checkpointing.list_epochs(two, "clustering", "state") == [0, 2, 3]
    for u, v in zip(jax.tree.leaves(checkpointing.load_state(two, 1)), jax.tree.leaves(checkpointing.load_state(one, 1)),
                    strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
