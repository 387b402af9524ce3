"""The run as a record (dcjax.run): what training resolves at its start, what
the scoring pass stores, and how the reading side treats a run that is
still training or was stopped early."""
import contextlib
import fcntl
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from dcjax import checkpointing, evaluate, select, train
from dcjax import run as run_lib

SEEDS = 2


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """AE+k-means: its candidates are k-means'd pretraining epochs."""
    workdir = tmp_path_factory.mktemp("aek")
    train.train_and_evaluate(tiny_config("ae_kmeans", seeds=SEEDS, pretrain_epochs=4), workdir)
    return workdir


def quiet_select(argv):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        result = select.main(argv)
    return result, printed.getvalue()


def test_training_writes_what_readers_need_at_its_start(ae_run):
    facts = json.loads((ae_run / run_lib.RUN_FILE).read_text())
    assert facts["n_clusters"] == 10 and facts["n"] == 400 and facts["d"] == 64 and facts["labelled"]
    assert facts["data_fingerprint"].startswith("sha256:") and len(facts["data_fingerprint"]) == 71
    provenance = json.loads((ae_run / "config.json").read_text())["provenance"]
    assert provenance["data_fingerprint"] == facts["data_fingerprint"] and provenance["jax"]
    record = run_lib.RunRecord(ae_run)
    assert (record.n_centers, record.seeds, record.selection_phase) == (10, [0, 1], "pretrain")
    assert record.status()["complete"] and record.status()["message"] is None


def test_a_second_select_reads_the_stored_partitions_and_computes_no_kmeans(ae_run, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(ae_run, workdir)
    first, _ = quiet_select(["--workdir", str(workdir)])
    record = run_lib.RunRecord(workdir)
    assert record.scored_epochs("pretrain") == record.epochs("pretrain") == [1, 2, 3, 4]
    # the stored partition of an epoch is the k-means that scored it
    snap = checkpointing.load_snapshot(workdir, 3, "pretrain")
    setup = evaluate.Setup(record.seeds, 10, 3, None, None, None)
    np.testing.assert_array_equal(record.load_scored("pretrain", 3)["labels"],
                                  np.asarray(evaluate.assignments_of(setup, "pretrain", 3, snap)))

    def forbidden(*args, **kwargs):
        raise AssertionError("computed again")
    monkeypatch.setattr(evaluate, "kmeans_seeds", forbidden)
    monkeypatch.setattr(evaluate, "kmeans", forbidden)
    monkeypatch.setattr(checkpointing, "snapshot_reader", forbidden)   # no snapshot is read either
    second, _ = quiet_select(["--workdir", str(workdir), "--launch-selector", "consensus"])
    assert [(s["seed"], s["epoch"]) for s in second["seeds"]] == [(s["seed"], s["epoch"]) for s in first["seeds"]]
    assert second["launch"]["selector"] == "consensus"


def test_a_run_stopped_in_pretraining_has_no_candidates_yet(tmp_path):
    """DKM killed in pretraining: not an AE+k-means run; select says so in one line."""
    workdir = tmp_path / "dkm"
    train.train_and_evaluate(tiny_config("dkm", seeds=1, pretrain_epochs=2, clustering_epochs=2), workdir)
    shutil.rmtree(workdir / "clustering")
    record = run_lib.RunRecord(workdir)
    assert record.selection_phase == "clustering" and not record.status()["complete"]
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()) as err:
        select.main(["--workdir", str(workdir)])
    assert stop.value.code == 2
    message = err.getvalue().strip()
    assert len(message.splitlines()) == 1 and "no clustering epoch to choose from yet" in message
    assert "pretrain epoch 2 of 2" in message and not (workdir / "selected_labels.npy").exists()


def test_a_run_in_progress_is_said_to_be(ae_run, tmp_path):
    workdir = tmp_path / "running"
    shutil.copytree(ae_run, workdir)
    with open(workdir / run_lib.LOCK_FILE, "w") as held:   # as the training driver holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = run_lib.RunRecord(workdir).status()
        assert status["in_progress"] and "training is still running" in status["message"]
        result, printed = quiet_select(["--workdir", str(workdir)])
    assert result["status"]["in_progress"] and "warning: training is still running" in printed
    assert not run_lib.RunRecord(workdir).status()["in_progress"]   # released: a stale lock file is no run


@contextlib.contextmanager
def read_only_copy(source, tmp_path):
    """A copy of the run behind a read-only bind mount (root can write to a
    chmod 555 folder, not to a read-only file system); skips where mounting
    is not allowed."""
    copy, view = tmp_path / "copy", tmp_path / "read_only"
    shutil.copytree(source, copy)
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(copy), str(view)], capture_output=True).returncode:
        pytest.skip("no bind mounts here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True, capture_output=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


@pytest.mark.parametrize("command", ["select", "report"])
def test_a_read_only_run_is_refused_in_one_line_and_nothing_hangs(ae_run, tmp_path, command):
    with read_only_copy(ae_run, tmp_path) as view:
        done = subprocess.run([sys.executable, "-m", f"dcjax.{command}", "--workdir", str(view)],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is read-only" in lines[0] and "copy it somewhere writable" in lines[0], lines


def test_a_seed_that_diverged_to_infinity_is_chosen_before_it_diverged(ae_run, tmp_path):
    """A learning rate far too high sends a seed's loss to +inf (not NaN):
    the curves' filters must not see the inf, and the seed's choice stays at
    its last finite epoch. The run's records are edited as the driver writes them."""
    workdir = tmp_path / "run"
    shutil.copytree(ae_run, workdir)
    path = workdir / "pretrain" / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if record["epoch"] == 4:
            for name in record["loss"]:
                record["loss"][name][1] = float("inf")
                record["batch_loss"][name][1] = [float("inf")] * len(record["batch_loss"][name][1])
            record["diverged"] = [False, True]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result, printed = quiet_select(["--workdir", str(workdir), "--selector", "min_loss"])
    chosen = {s["seed"]: s for s in result["seeds"]}
    assert chosen[1]["epoch"] <= 3 and chosen[1]["diverged"]["last_finite_epoch"] == 3
    assert "seed 1 diverged" in printed
