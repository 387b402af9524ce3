"""Faults a run survives: a damaged resume point or snapshot, a diverging
seed, a second launch, an unwritable workdir, a disk too small or full. And
the default checkpoints: any pruned epoch's model state comes back exact."""
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import tiny_config
from dcjax import checkpointing, evaluate, replay, testing, train
from dcjax import config as config_lib
from dcjax import workdir as workdir_lib

REPO = Path(__file__).resolve().parents[1]
CLUSTERING_EPOCHS = 6


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def assert_same_run(a: Path, b: Path, seeds=slice(None)):
    """Snapshots, records and final model states of `seeds` bit for bit."""
    for phase in checkpointing.PHASES:
        epochs = checkpointing.list_epochs(a, phase)
        assert epochs == checkpointing.list_epochs(b, phase)
        for epoch in epochs:
            sa, sb = checkpointing.load_snapshot(a, epoch, phase), checkpointing.load_snapshot(b, epoch, phase)
            for key in sa:
                np.testing.assert_array_equal(sa[key][seeds], sb[key][seeds])
        ra, rb = checkpointing.load_records(a, phase), checkpointing.load_records(b, phase)
        assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
        for x, y in zip(ra, rb):
            for name in x["batch_loss"]:
                np.testing.assert_array_equal(np.asarray(x["batch_loss"][name])[seeds],
                                              np.asarray(y["batch_loss"][name])[seeds])
        last = epochs[-1]
        for u, v in zip(leaves(checkpointing.load_state(a, last, phase)),
                        leaves(checkpointing.load_state(b, last, phase)), strict=True):
            np.testing.assert_array_equal(u[seeds], v[seeds])


def config(seeds=2, **overrides):
    """Two seeds, resume points every 2 epochs, kept for good every 4th."""
    settings = {"checkpoint.resume_every": 2, "checkpoint.keep_resume_every": 4, "seed_parallelism": "loop"}
    return tiny_config("dec", seeds=seeds, pretrain_epochs=3, clustering_epochs=CLUSTERING_EPOCHS,
                       **(settings | overrides))


def largest_file(item: Path) -> Path:
    return max((p for p in item.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every fault is compared with."""
    workdir = tmp_path_factory.mktemp("reference")
    train.train_and_evaluate(config(), workdir)
    return workdir


def test_resume_skips_a_damaged_resume_point_for_the_one_before(reference, tmp_path, caplog):
    """The reported failure: the newest resume point truncated, an intact one beside it."""
    cfg = config()
    cfg.clustering.epochs = 4                     # where the first launch ended (or was killed)
    train.train_and_evaluate(cfg, tmp_path)
    assert checkpointing.list_epochs(tmp_path, "clustering", "resume") == [0, 2, 4]
    newest = largest_file(tmp_path / "clustering" / "resume" / "4")
    os.truncate(newest, newest.stat().st_size // 2)
    with pytest.raises(checkpointing.DamagedCheckpointError, match="epoch 4"):
        checkpointing.load_state(tmp_path, 4, kind="resume")
    cfg.clustering.epochs = CLUSTERING_EPOCHS     # continue: from epoch 2, replaying 3 and 4
    with caplog.at_level(logging.WARNING, logger="dcjax"):
        train.train_and_evaluate(cfg, tmp_path)
    assert any("resume point of epoch 4" in r.message and "damaged" in r.message and "skipped" in r.message
               for r in caplog.records)
    assert_same_run(tmp_path, reference)
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == \
        json.loads((reference / "summary.json").read_text())["seeds"]


def test_bytes_overwritten_in_place_are_damage_and_resume_falls_back(reference, tmp_path, caplog):
    """64 bytes overwritten inside the newest resume point, its size unchanged:
    orbax would read it back as numbers; its checksum manifest says it
    changed, so resuming takes the resume point before it and the run ends
    as the uninterrupted one."""
    cfg = config()
    cfg.clustering.epochs = 4
    train.train_and_evaluate(cfg, tmp_path)
    item = tmp_path / "clustering" / "resume" / "4"
    assert (item / checkpointing.CHECKSUMS).exists()
    target = largest_file(item)
    size = target.stat().st_size
    with open(target, "r+b") as f:
        f.seek(size // 2)
        original = f.read(64)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in original))
    assert target.stat().st_size == size
    with pytest.raises(checkpointing.DamagedCheckpointError, match="does not match its checksum"):
        checkpointing.load_state(tmp_path, 4, kind="resume")
    cfg.clustering.epochs = CLUSTERING_EPOCHS
    with caplog.at_level(logging.WARNING, logger="dcjax"):
        train.train_and_evaluate(cfg, tmp_path)
    assert any("resume point of epoch 4" in r.message and "skipped" in r.message for r in caplog.records)
    assert_same_run(tmp_path, reference)


def test_a_damaged_snapshot_or_state_is_reported_never_returned_and_evaluation_goes_on(reference, tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    # Snapshots are written in blocks, one item per resume point (every 2 epochs here):
    # a damaged file in the item of epochs 3-4 loses both.
    item = checkpointing.epoch_dir(workdir, 3)
    assert item.name == "4" and checkpointing.epoch_dir(workdir, 4) == item
    snapshot = largest_file(item)
    os.truncate(snapshot, snapshot.stat().st_size // 2)
    (largest_file(workdir / "clustering" / "resume" / "4")).unlink()
    with pytest.raises(checkpointing.DamagedCheckpointError, match="snapshot of epoch 3"):
        checkpointing.load_snapshot(workdir, 3)
    with pytest.raises(checkpointing.DamagedCheckpointError, match="snapshot of epoch 4"):
        checkpointing.load_snapshot(workdir, 4)
    with pytest.raises(checkpointing.DamagedCheckpointError, match="epoch 4"):
        checkpointing.load_state(workdir, 4)      # stored there, unreadable: reported, not replayed around
    with caplog.at_level(logging.WARNING, logger="dcjax"):
        table = evaluate.evaluate_run(workdir, progress=False)
    assert table.attrs["damaged"] == [("clustering", 3), ("clustering", 4)]
    assert any("snapshot of epoch 3" in r.message and "left out" in r.message for r in caplog.records)
    clustering = table[table.phase == "clustering"]
    assert sorted(set(clustering.epoch)) == [0, 1, 2, 5, 6]
    assert clustering[clustering.epoch == 5].ari_vs_previous.isna().all()   # its previous epoch is missing
    # a pruned epoch after the damaged resume point replays from the one before it
    for u, v in zip(leaves(checkpointing.load_state(workdir, 5)), leaves(checkpointing.load_state(reference, 5))):
        np.testing.assert_array_equal(u, v)


def test_restoring_a_pruned_epoch_gives_its_exact_parameters_under_vmap(tmp_path):
    """A vmapped run that also stores every epoch: each epoch replayed from
    the resume points equals the stored one, bit for bit (same device
    layout, same program). The loop case: tests/test_train.py, three layouts."""
    cfg = config(seed_parallelism="vmap", **{"checkpoint.model_states": "every_epoch"})
    cfg.pretrain.epochs = 5
    train.train_and_evaluate(cfg, tmp_path)
    assert checkpointing.list_epochs(tmp_path, "pretrain", "resume") == [4, 5]
    assert checkpointing.list_epochs(tmp_path, "clustering", "resume") == [0, 4, 6]
    for phase, epochs in (("pretrain", range(1, 6)), ("clustering", range(0, CLUSTERING_EPOCHS + 1))):
        for epoch in epochs:
            stored = checkpointing.load_state(tmp_path, epoch, phase)
            for u, v in zip(leaves(stored), leaves(checkpointing._replay(tmp_path, phase, epoch)), strict=True):
                np.testing.assert_array_equal(u, v)


def poison_seed(monkeypatch, index: int, from_epoch: int):
    """Seed `index` gets NaN weights in clustering epoch `from_epoch` and later
    (the fault-injection script's way of making one seed diverge)."""
    poisoned = testing.poisoned(train.make_train, index, from_epoch)
    monkeypatch.setattr(train, "make_train", poisoned)
    monkeypatch.setattr(replay, "make_train", poisoned)   # a pruned epoch is rebuilt by the same (poisoned) training
    replay._replay_setup.cache_clear()


def test_a_diverging_seed_is_frozen_and_flagged_while_the_others_equal_a_launch_without_it(
        reference, tmp_path, monkeypatch, caplog):
    poison_seed(monkeypatch, index=2, from_epoch=3)
    with caplog.at_level(logging.WARNING, logger="dcjax"):
        summary = train.train_and_evaluate(config(seeds=3), tmp_path)
    assert any("seed 2 diverged in clustering epoch 3" in r.message for r in caplog.records)
    assert_same_run(tmp_path, reference, seeds=slice(0, 2))     # seeds 0 and 1 are the reference's 0 and 1
    records = checkpointing.load_records(tmp_path, "clustering")
    assert [r["diverged"] for r in records] == [[False] * 3] * 2 + [[False, False, True]] * 4
    assert np.isnan(records[-1]["loss"]["total"][2]) and np.isfinite(records[-1]["loss"]["total"][:2]).all()
    # frozen at epoch 2: its state and snapshot stay those of epoch 2 (state of epoch 5: replayed, frozen too)
    for epoch in (3, 5, 6):
        for u, v in zip(leaves(checkpointing.load_state(tmp_path, epoch)), leaves(checkpointing.load_state(tmp_path, 2))):
            np.testing.assert_array_equal(u[2], v[2])
        np.testing.assert_array_equal(checkpointing.load_snapshot(tmp_path, epoch)["assignments"][2],
                                      checkpointing.load_snapshot(tmp_path, 2)["assignments"][2])
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["diverged_seeds"] == [2] == summary["diverged_seeds"]
    assert stored["seeds"][2]["diverged"] == {"phase": "clustering", "epoch": 3, "last_finite_epoch": 2}
    assert stored["seeds"][2]["epoch"] == 2 and stored["seeds"][0]["diverged"] is None
    assert stored["seeds"][:2] == [dict(row, diverged=None) for row in
                                   json.loads((reference / "summary.json").read_text())["seeds"]]
    assert "DIVERGED in clustering epoch 3" in train.format_summary(stored, tmp_path)


def hold_lock(workdir: Path) -> subprocess.Popen:
    """Another process that holds the workdir's lock until killed."""
    code = ("import sys, time; from pathlib import Path; from dcjax import train\n"
            "with train._workdir_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_launch_is_refused_at_once_and_a_killed_launchs_lock_is_taken_over(tmp_path, caplog):
    tmp_path.mkdir(exist_ok=True)
    holder = hold_lock(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(train.WorkdirBusyError, match=f"in use by another dcjax run \\(pid {holder.pid} "):
            train.train_and_evaluate(config(), tmp_path)
        assert time.perf_counter() - t0 < 5           # refused before loading data or compiling
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in (tmp_path / train.LOCK_FILE).read_text()   # what a killed run leaves
    with caplog.at_level(logging.WARNING, logger="dcjax"), train._workdir_lock(tmp_path):
        assert str(os.getpid()) in (tmp_path / train.LOCK_FILE).read_text()
    assert any(f"taking over the lock of pid {holder.pid}" in r.message for r in caplog.records)
    assert (tmp_path / train.LOCK_FILE).read_text() == ""                     # a clean end clears it


def test_an_unwritable_workdir_is_refused_before_compute(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(PermissionError, match="cannot write to the workdir"):
        train.train_and_evaluate(config(), tmp_path / "a_file" / "run")
    if os.geteuid() != 0:    # root writes through permissions; the fault-injection script mounts a read-only disk
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        with pytest.raises(PermissionError, match="cannot write to the workdir"):
            train.train_and_evaluate(config(), tmp_path / "ro")


def free_space(monkeypatch, module, free_bytes):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(module.shutil, "disk_usage",
                        lambda path: type(usage)(usage.total, usage.total - free_bytes(), free_bytes()))


def test_a_run_that_would_not_fit_the_disk_is_refused_saying_how_to_write_less(reference, tmp_path, monkeypatch):
    free_space(monkeypatch, workdir_lib, lambda: 1_000_000)
    with pytest.raises(checkpointing.DiskFullError, match="embedding_dtype=float16.*keep_resume_every") as refused:
        train.train_and_evaluate(config(), tmp_path)
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} <= {"config.json", train.LOCK_FILE,   # no epoch
                                                                    workdir_lib.MARKER_FILE, "run.json"}
    # the estimate, against what the same run wrote
    estimate = float(re.search(r"about ([\d,.]+) MB", str(refused.value)).group(1).replace(",", "")) * 1e6
    written = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    assert 0.8 < estimate / written < 1.25, (estimate, written)


def test_a_full_disk_mid_run_ends_clearly_leaves_complete_checkpoints_and_the_run_continues(reference, tmp_path,
                                                                                              monkeypatch):
    saves = []

    def free():   # plenty for the check before training and 6 saves, then none: clustering epoch 3 fails
        saves.append(1)
        return 10 ** 12 if len(saves) < 8 else 10
    free_space(monkeypatch, checkpointing, free)
    assert config().checkpoint.writer == "background"   # the save that fails runs in the writer thread
    with pytest.raises(checkpointing.DiskFullError, match="disk holding .* is full.*run the same command again") as e:
        train.train_and_evaluate(config(), tmp_path)
    monkeypatch.undo()
    assert "\n" not in str(e.value)                      # the CLI prints it as one line
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("dcjax-writer")]
    assert not list(tmp_path.rglob("*orbax-checkpoint-tmp*"))
    for phase in checkpointing.PHASES:       # what is there is complete
        for epoch in checkpointing.list_epochs(tmp_path, phase):
            checkpointing.load_snapshot(tmp_path, epoch, phase)
    assert checkpointing.list_epochs(tmp_path, "clustering") != list(range(CLUSTERING_EPOCHS + 1))   # it stopped
    train.train_and_evaluate(config(), tmp_path)
    assert_same_run(tmp_path, reference)


@pytest.mark.parametrize("field, value, match", [
    ("checkpoint.resume_every", 0, r"checkpoint.resume_every = 0 is invalid: it must be an integer >= 1"),
    ("checkpoint.keep_resume_every", 3, r"keep_resume_every = 3 must be a multiple of checkpoint.resume_every \(2\)"),
    ("pretrain.learning_rate", float("inf"), r"pretrain.learning_rate = inf is invalid: it must be a number > 0, finite"),
    ("clustering.learning_rate", float("nan"), r"clustering.learning_rate = nan is invalid"),
])
def test_settings_that_cannot_train_are_refused_before_any_folder_or_compute(tmp_path, field, value, match):
    """Before: a ZeroDivisionError, or a run that trained and ended in a FloatingPointError."""
    with pytest.raises(config_lib.ConfigError, match=match):
        train.train_and_evaluate(config(**{field: value}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algorithm, pretrain, clustering, refused", [
    ("ae_kmeans", 1, 0, True), ("ae_kmeans", 2, 0, False),
    ("dec", 0, 0, True), ("dec", 1, 0, True), ("dec", 2, 0, False), ("dec", 0, 1, False),
])
def test_epochs_the_selection_cannot_choose_among_are_refused(algorithm, pretrain, clustering, refused):
    """Before: training ran, then the selection failed (selection.py:238 on no
    pretraining epoch, np.gradient on one)."""
    c = config_lib.make_config(algorithm, "digits")
    c.pretrain.epochs, c.clustering.epochs = pretrain, clustering
    if refused:
        with pytest.raises(config_lib.ConfigError, match=r"pretrain.epochs = \d is too few"):
            config_lib.validate(c)
    else:
        config_lib.validate(c)


# -- the background writer (dcjax/epoch_writer.py)

def test_an_error_inside_the_writer_stops_it_and_reaches_the_loop():
    from dcjax.epoch_writer import EpochWriter
    written = []

    def write(epoch):
        if epoch == 3:
            raise OSError(28, "No space left on device")
        written.append(epoch)
    for background in (True, False):
        written.clear()
        writer = EpochWriter(write, depth=2, background=background)
        with pytest.raises(OSError, match="No space left"):
            for epoch in range(1, 20):
                writer.submit(epoch)
            writer.close()
        writer.abandon()
        assert written == [1, 2]    # nothing after the failed epoch, in order
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("dcjax-epoch-writer")]


def test_the_loop_waits_for_the_writer_only_when_it_is_depth_epochs_behind():
    from dcjax.epoch_writer import EpochWriter
    release, written = __import__("threading").Event(), []
    writer = EpochWriter(lambda e: (release.wait(), written.append(e)), depth=2)
    start = time.perf_counter()
    writer.submit(1)
    writer.submit(2)                  # 1 is being written, 2 waits: no stall yet
    assert time.perf_counter() - start < 0.5 and written == []
    release.set()
    writer.close()
    assert written == [1, 2]


CLI_ARGS = ["--config", "configs/dec_digits.py:smoke", "--config.dataset.subsample=400", "--config.batch_size=64",
            "--config.seeds=2", "--config.pretrain.epochs=3", f"--config.clustering.epochs={CLUSTERING_EPOCHS}",
            "--config.kmeans.n_init=3", "--config.progress=False", "--config.checkpoint.resume_every=2",
            "--config.checkpoint.keep_resume_every=4", "--config.seed_parallelism=loop"]


def test_a_run_killed_at_random_moments_resumes_bit_identically(reference, tmp_path):
    """SIGKILL while the background writer has epochs in hand (at random
    moments, and while orbax is writing an item), then the same command:
    what is on disk equals the uninterrupted run's, bit for bit."""
    import random
    import signal
    assert config().checkpoint.writer == "background"
    rng, workdir, kills = random.Random(0), tmp_path / "run", 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "dcjax.main", *CLI_ARGS, f"--workdir={workdir}"]
    for attempt in range(6):
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        if attempt % 2:   # the moment an item's temporary folder appears
            while proc.poll() is None and time.time() < deadline and not any(
                    workdir.glob("*/*/*.orbax-checkpoint-tmp*")):
                time.sleep(0.002)
        else:             # once training has written something, a random moment after
            while proc.poll() is None and time.time() < deadline and not (workdir / "pretrain").exists():
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if kills == 3:
            break
        if proc.returncode == 0:   # finished before the moment came: start over
            shutil.rmtree(workdir)
    assert kills == 3
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(workdir, reference)
