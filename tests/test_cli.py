"""The command line from a folder outside the repository: config names and
the default config resolve inside the package, and every user mistake is one
line on stderr with exit status 2, before any compute (no workdir is made)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcjax import config as config_lib

REPO = Path(__file__).resolve().parent.parent


def run_main(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dcjax.main", *args, "--workdir", str(cwd / "run")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config.clustering.epochs=-3"], "clustering.epochs = -3 is invalid: it must be an integer >= 0"),
    (["--config", "dkm", "--config.pretrain.epochs=-1"], "pretrain.epochs = -1 is invalid"),
    (["--config.clustering.learning_rate=0"], "clustering.learning_rate = 0.0 is invalid: it must be a number > 0"),
    (["--config.pretrain.learning_rate=-0.1"], "pretrain.learning_rate = -0.1 is invalid"),
    (["--config.seeds=0"], "seeds = 0 is invalid: it must be an integer >= 1"),
    (["--config.batch_size=0"], "batch_size = 0 is invalid: it must be an integer >= 1"),
    (["--config.clustering.epoch=3"], "unknown config field 'clustering.epoch' (did you mean clustering.epochs?)"),
    (["--config", "dkm_usps:fast"], "unknown config preset 'fast'; known presets: smoke, seeds=N"),
    (["--config", "dkm_cifar"], "unknown config 'dkm_cifar'"),
    (["--config", "mine.py"], "config file mine.py not found"),
    (["--config", "dkm", "--config.dataset.name=data.csv", "--config.dataset.n_clusters=2"],
     "data.csv line 3: 1 field, but 2 in the header (a ragged row)"),
    (["--config", "dkm", "--config.dataset.name=good.csv"],
     "no labels, so the number of clusters is unknown: set dataset.n_clusters, or let UNSEEN find it"),
])
def test_a_mistake_is_one_line_and_exit_status_2(tmp_path, args, message):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "good.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    done = run_main(tmp_path, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m dcjax.main: error: "), done.stderr[-2000:]
    assert message in lines[0]
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_unseen_runs_on_unlabelled_data_without_a_k(tmp_path):
    """UNSEEN finds k, so a file without labels needs no dataset.n_clusters
    (DKM on the same file is refused above, naming both ways out)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(10 * c, 1, (60, 4)) for c in range(3)])
    np.savetxt(tmp_path / "mine.csv", x, delimiter=",", header="a,b,c,d", comments="")
    done = run_main(tmp_path, "--config", "unseen_dec", "--config.dataset.name=mine.csv", "--config.seeds=1",
                    "--config.batch_size=64", "--config.pretrain.epochs=3", "--config.clustering.epochs=2", "--config.unseen.k_init=8")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["algorithm"] == "unseen_dec" and 2 <= summary["seeds"][0]["n_clusters"] <= 8
    assert len(summary["seeds"][0]["cluster_sizes"]) == 8   # k_init centers, the dead ones masked


def test_a_config_file_with_a_typo_is_refused(tmp_path):
    (tmp_path / "mine.py").write_text("from dcjax.config import make_config\n\n"
                                      "def get_config(arg=None):\n    c = make_config('dkm', 'digits')\n"
                                      "    c.clustering.unlock()\n    c.clustering.epoch = 3\n    return c\n")
    done = run_main(tmp_path, "--config", "mine.py")
    assert done.returncode == 2 and "unknown config field 'clustering.epoch'" in done.stderr


def test_names_give_the_configs_of_the_files():
    files = sorted((REPO / "configs").glob("*.py"))
    assert len(files) == 1 + len(config_lib.NAMED_ALGORITHMS) * len(config_lib.DATASETS)
    for path in files:
        namespace = {}
        exec(path.read_text(), namespace)
        for arg in (None, "smoke,seeds=3"):
            named = config_lib.config_from_name(path.stem, arg)
            assert named.to_dict() == namespace["get_config"](arg).to_dict(), path.name
            config_lib.validate(named)
    assert config_lib.config_from_name("dkm").dataset.name == "digits"
    assert config_lib.config_from_name("ae_kmeans_usps").algorithm == "ae_kmeans"
    unseen = config_lib.config_from_name("unseen_dec_usps")
    assert (unseen.algorithm, unseen.unseen.enabled, unseen.dataset.name) == ("dec", True, "usps")
    assert set(config_lib.config_names()) >= {p.stem for p in files}
