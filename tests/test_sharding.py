"""The seed axis sharded over 4 simulated CPU devices gives the one-device result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dcjax import checkpointing

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config", "configs/dcn_digits.py:smoke", "--config.dataset.subsample=400", "--config.batch_size=64",
        "--config.seeds=4", "--config.pretrain.epochs=2", "--config.clustering.epochs=3",
        "--config.kmeans.n_init=3", "--config.progress=False",
        "--config.seed_parallelism=vmap"]  # the same batched program on one device and sharded on four

PROBE = "import jax; from dcjax import train; s = train.seed_sharding(4)[0]; print(len(s.mesh.devices.flat))"


def run(workdir, devices):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=REPO)
    assert probe.stdout.strip() == str(devices), probe.stderr
    out = subprocess.run([sys.executable, "-m", "dcjax.main", *ARGS, f"--workdir={workdir}"],
                         env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_four_seeds_on_four_devices_equal_one_device(tmp_path):
    run(tmp_path / "one", 1)
    run(tmp_path / "four", 4)
    for epoch in range(4):
        a = checkpointing.load_snapshot(tmp_path / "one", epoch)
        b = checkpointing.load_snapshot(tmp_path / "four", epoch)
        np.testing.assert_array_equal(a["assignments"], b["assignments"])
        np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-4, atol=1e-4)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    four = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert one["seeds"] == four["seeds"]
