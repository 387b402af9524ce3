"""The training loop end to end on tiny runs: seeds, checkpoints, resume, CLI."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from dcjax import checkpointing, data, train
from dcjax.models import make_autoencoder

REPO = Path(__file__).resolve().parents[1]


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def run_pure(cfg):
    ds = data.load_dataset(cfg.dataset)
    trainer = train.make_train(cfg, *ds.x.shape, ds.n_clusters)
    return trainer.train(train.seed_keys(cfg), jnp.asarray(ds.x))


@pytest.mark.parametrize("algorithm", ["dcn", "dkm"])
def test_seed_alone_is_bitwise_equal_to_seed_in_a_batch_with_loop(algorithm):
    together = run_pure(tiny_config(algorithm, seeds=3, seed_parallelism="loop"))
    alone = run_pure(tiny_config(algorithm, seeds=1, seed=2, seed_parallelism="loop"))
    for a, b in zip(leaves(together[1]["params"]), leaves(alone[1]["params"])):
        np.testing.assert_array_equal(a[2], b[0])
    np.testing.assert_array_equal(together[2]["assignments"][2], alone[2]["assignments"][0])


def test_seed_alone_equals_seed_in_a_vmapped_batch():
    together = run_pure(tiny_config("dec", seeds=3, seed_parallelism="vmap"))
    alone = run_pure(tiny_config("dec", seeds=1, seed=2, seed_parallelism="vmap"))
    for a, b in zip(leaves(together[1]["params"]), leaves(alone[1]["params"])):
        np.testing.assert_allclose(a[2], b[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(together[2]["assignments"][2], alone[2]["assignments"][0])
    # and the seeds really differ from one another
    assert not np.array_equal(together[2]["assignments"][0], together[2]["assignments"][1])


def test_auto_parallelism_is_loop_on_one_cpu_and_a_resumed_run_keeps_its_setting(tmp_path):
    assert jax.default_backend() == "cpu" and jax.device_count() == 1
    assert train.resolve_seed_parallelism("auto") == "loop"
    with pytest.raises(ValueError, match="seed_parallelism"):
        train.resolve_seed_parallelism("pmap")
    fresh = tiny_config("dec", pretrain_epochs=1, clustering_epochs=1)
    assert fresh.seed_parallelism == "auto"
    train.train_and_evaluate(fresh, tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["seed_parallelism"] == "loop"
    # a workdir started under vmap is continued under vmap, not switched
    train.train_and_evaluate(tiny_config("dec", pretrain_epochs=1, clustering_epochs=1, seed_parallelism="vmap"),
                             tmp_path / "old")
    train.train_and_evaluate(tiny_config("dec", pretrain_epochs=1, clustering_epochs=2), tmp_path / "old")
    assert json.loads((tmp_path / "old" / "config.json").read_text())["seed_parallelism"] == "vmap"
    with pytest.raises(ValueError, match="seed_parallelism"):
        train.train_and_evaluate(tiny_config("dec", pretrain_epochs=1, clustering_epochs=2, seed_parallelism="loop"),
                                 tmp_path / "old")


@pytest.fixture(scope="module")
def three_seed_run(tmp_path_factory):
    cfg = tiny_config("idec", seeds=3, pretrain_epochs=3, clustering_epochs=8)
    workdir = tmp_path_factory.mktemp("run")
    summary = train.train_and_evaluate(cfg, workdir)
    return cfg, workdir, summary


def test_one_checkpoint_per_epoch_per_phase(three_seed_run):
    cfg, workdir, summary = three_seed_run
    assert checkpointing.list_epochs(workdir, "pretrain") == [1, 2, 3]
    assert checkpointing.list_epochs(workdir, "clustering") == list(range(9))   # 0 = k-means init
    # by default model states are stored only in resume points; load_state replays the other epochs
    assert checkpointing.list_epochs(workdir, "pretrain", "state") == [3]
    assert checkpointing.list_epochs(workdir, "clustering", "state") == [0, 8]
    assert sorted(p.name for p in (workdir / "clustering").iterdir()) == ["records.jsonl", "resume", "snapshot_blocks"]
    # the snapshots as blocks, one item per resume point: epoch 0, then 1..8 (the last epoch is one)
    assert sorted(int(p.name) for p in (workdir / "clustering" / "snapshot_blocks").iterdir()
                  if p.name.isdigit()) == [0, 8]
    # the full state, optimiser included, only at resume points (every 10 epochs, the last; newest 2 kept)
    assert cfg.checkpoint.resume_every == 10
    assert checkpointing.list_epochs(workdir, "pretrain", "resume") == [3]
    assert checkpointing.list_epochs(workdir, "clustering", "resume") == [0, 8]
    assert "opt_state" not in checkpointing.load_state(workdir, 8)
    full = checkpointing.load_state(workdir, 8, kind="resume")
    assert "opt_state" in full
    for u, v in zip(leaves(full["params"]), leaves(checkpointing.load_state(workdir, 8)["params"])):
        np.testing.assert_array_equal(u, v)
    records = checkpointing.load_records(workdir, "clustering")
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert len(records[0]["batch_loss"]["total"]) == 3                       # per seed
    assert len(records[0]["batch_loss"]["total"][0]) == 400 // 64           # per batch
    assert set(records[0]["loss"]) == {"total", "clustering", "reconstruction"}
    assert np.asarray(records[-1]["cluster_sizes"]).sum(axis=1).tolist() == [400] * 3
    assert [s["seed"] for s in summary["seeds"]] == [0, 1, 2]
    assert 0.0 < summary["algorithm_mean"]["acc"] <= 1.0


def test_restore_epoch_7_of_seed_2_rebuilds_its_clustering(three_seed_run):
    """The README's notebook snippet: everything of epoch 7, seed 2, from disk."""
    cfg, workdir, _ = three_seed_run
    snap = checkpointing.load_snapshot(workdir, epoch=7)
    state = checkpointing.load_state(workdir, epoch=7)
    seed = 2
    z, labels, centers = snap["embedding"][seed], snap["assignments"][seed], snap["centers"][seed]
    assert z.shape == (400, 10) and labels.shape == (400,) and centers.shape == (10, 10)
    # the embedding is the network's, and the assignment the nearest center
    x = data.load_dataset(checkpointing.load_config(workdir).dataset).x
    model = make_autoencoder(x.shape[1], cfg.model)
    params = jax.tree.map(lambda a: a[seed], state["params"]["ae"])
    z_again = model.apply({"params": params}, x, method=model.encode)
    np.testing.assert_allclose(z_again, z, rtol=1e-4, atol=1e-4)
    d2 = ((z[:, None] - centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    np.testing.assert_array_equal(state["params"]["centers"][seed], centers)


def test_checkpointed_run_is_bitwise_the_pure_run(three_seed_run):
    cfg, workdir, _ = three_seed_run
    _, cstate, history = run_pure(cfg)
    final = checkpointing.load_state(workdir, 8)
    for a, b in zip(leaves(final["params"]), leaves(cstate["params"])):
        np.testing.assert_array_equal(a, b)
    for epoch in (0, 4, 8):
        np.testing.assert_array_equal(checkpointing.load_snapshot(workdir, epoch)["assignments"],
                                      history["assignments"][:, epoch])


def test_pretrained_from_shares_the_pretraining(tmp_path):
    base = tiny_config("ae_kmeans", seeds=2)
    train.train_and_evaluate(base, tmp_path / "ae")
    cfg = tiny_config("dcn", seeds=1, seed=1, pretrained_from=str(tmp_path / "ae"))
    train.train_and_evaluate(cfg, tmp_path / "dcn")
    ae_state = checkpointing.load_state(tmp_path / "ae", 2, phase="pretrain")
    dcn_init = checkpointing.load_state(tmp_path / "dcn", 0)
    for a, b in zip(leaves(ae_state["params"]), leaves(dcn_init["params"]["ae"])):
        np.testing.assert_array_equal(a[1], b[0])
    np.testing.assert_array_equal(checkpointing.load_snapshot(tmp_path / "ae", 0)["assignments"][1],
                                  checkpointing.load_snapshot(tmp_path / "dcn", 0)["assignments"][0])
    bad = tiny_config("dcn", seeds=1, seed=5, pretrained_from=str(tmp_path / "ae"))
    with pytest.raises(ValueError, match="no seed"):
        train.train_and_evaluate(bad, tmp_path / "bad")
    # A run written before a config field existed (here dataset.label_column)
    # still serves: the missing field has its default. A real difference does not.
    stored = json.loads((tmp_path / "ae" / "config.json").read_text())
    del stored["dataset"]["label_column"]
    (tmp_path / "ae" / "config.json").write_text(json.dumps(stored))
    train.train_and_evaluate(cfg, tmp_path / "dcn_from_older")
    older_run = json.loads((tmp_path / "dcn" / "config.json").read_text())   # and such a run resumes
    del older_run["dataset"]["label_column"]
    (tmp_path / "dcn" / "config.json").write_text(json.dumps(older_run))
    train.train_and_evaluate(cfg, tmp_path / "dcn")
    stored["model"]["embedding_dim"] += 1
    (tmp_path / "ae" / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"config differs.*model\.embedding_dim"):
        train.train_and_evaluate(cfg, tmp_path / "dcn_other_model")


def test_pretrained_from_reads_a_state_item_that_holds_more_than_the_model(tmp_path):
    """Runs written by earlier versions keep the optimiser in some per-epoch
    state items; starting from their autoencoder must read just the model."""
    base = tiny_config("ae_kmeans", **{"checkpoint.max_to_keep": 2})
    train.train_and_evaluate(base, tmp_path / "ae")
    final = base.pretrain.epochs
    stored = checkpointing.load_state(tmp_path / "ae", final, "pretrain")
    state_dir = tmp_path / "ae" / "pretrain" / "state"
    shutil.rmtree(state_dir / str(final))
    with checkpointing._manager(state_dir) as manager:   # rewritten as the older layout had it
        manager.save(final, args=checkpointing._save_args({**stored, "opt_state": {"mu": np.ones(3, np.float32)}}))
        manager.wait_until_finished()
    cfg = tiny_config("dcn", pretrained_from=str(tmp_path / "ae"))
    train.train_and_evaluate(cfg, tmp_path / "dcn")
    for a, b in zip(leaves(stored["params"]), leaves(checkpointing.load_state(tmp_path / "dcn", 0)["params"]["ae"])):
        np.testing.assert_array_equal(a, b)


def test_retention_prunes_state_but_keeps_every_snapshot(tmp_path):
    cfg = tiny_config("dkm", clustering_epochs=6, **{"checkpoint.max_to_keep": 2})
    train.train_and_evaluate(cfg, tmp_path)
    assert checkpointing._steps(tmp_path, "clustering", "state") == [5, 6]
    assert checkpointing.list_epochs(tmp_path, "clustering", "state") == [0, 5, 6]   # + resume point 0, kept
    assert checkpointing.list_epochs(tmp_path, "clustering") == list(range(7))
    assert not (tmp_path / "clustering" / checkpointing.JOINT).exists()   # the split layout


def test_the_three_layouts_hold_the_same_epochs(tmp_path):
    """Keeping every epoch writes one orbax item per epoch (state and snapshot
    together); retention writes them apart; the default stores model states
    only in resume points and replays the others. Readers give the same
    arrays, bit for bit: a replayed epoch is the epoch the run trained."""
    joint, split, replay = tmp_path / "joint", tmp_path / "split", tmp_path / "replay"
    train.train_and_evaluate(tiny_config("dcn", clustering_epochs=3, **{"checkpoint.model_states": "every_epoch"}),
                             joint)
    train.train_and_evaluate(tiny_config("dcn", clustering_epochs=3, **{"checkpoint.max_to_keep": 100}), split)
    train.train_and_evaluate(tiny_config("dcn", clustering_epochs=3), replay)
    assert (joint / "clustering" / checkpointing.JOINT).exists() and not (joint / "clustering" / "state").exists()
    assert (split / "clustering" / "snapshots").exists() and not (split / "clustering" / checkpointing.JOINT).exists()
    assert sorted(p.name for p in (replay / "clustering").iterdir()) == ["records.jsonl", "resume", "snapshot_blocks"]
    for phase, last in (("pretrain", 2), ("clustering", 3)):
        first = 1 if phase == "pretrain" else 0
        for kind in ("snapshots", "state"):
            assert checkpointing.list_epochs(joint, phase, kind) == list(range(first, last + 1))
            assert checkpointing.list_epochs(split, phase, kind) == list(range(first, last + 1))
        assert checkpointing.list_epochs(replay, phase, "snapshots") == list(range(first, last + 1))
        assert checkpointing.list_epochs(replay, phase, "state") == sorted({first if phase == "clustering" else last,
                                                                           last})
        for epoch in range(first, last + 1):
            assert checkpointing.epoch_dir(joint, epoch, phase).is_dir()
            reference = leaves(checkpointing.load_state(joint, epoch, phase))
            for other in (split, replay):
                for u, v in zip(reference, leaves(checkpointing.load_state(other, epoch, phase)), strict=True):
                    np.testing.assert_array_equal(u, v)
            with checkpointing.snapshot_reader(joint, phase) as load:
                a = load(epoch)
                for other in (split, replay):
                    b = checkpointing.load_snapshot(other, epoch, phase)
                    assert sorted(a) == sorted(b)
                    for key in a:
                        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="retention"):
        checkpointing.PhaseCheckpoints(joint, "clustering", max_to_keep=2)
    with pytest.raises(FileNotFoundError, match="not trained"):
        checkpointing.load_state(replay, 4)   # replay rebuilds trained epochs, it does not train new ones


def test_retention_keeps_epochs_a_selector_asked_for(tmp_path):
    cfg = tiny_config("dec", clustering_epochs=3, **{"checkpoint.max_to_keep": 1})
    train.train_and_evaluate(cfg, tmp_path)
    assert checkpointing._steps(tmp_path, "clustering", "state") == [3]      # the per-epoch states
    (tmp_path / "keep_epochs.json").write_text(json.dumps({"clustering": [3]}))
    cfg.clustering.epochs = 5            # continue the run: epoch 3 must survive
    train.train_and_evaluate(cfg, tmp_path)
    assert checkpointing._steps(tmp_path, "clustering", "state") == [3, 5]


def test_a_run_killed_before_its_first_resume_point_starts_over_to_the_same_result(tmp_path):
    cfg = tiny_config("dec", pretrain_epochs=3, clustering_epochs=2, **{"checkpoint.resume_every": 10})
    reference = train.train_and_evaluate(cfg, tmp_path / "reference")
    # What a run killed in pretraining epoch 3 leaves: no resume point, since the first comes at
    # epoch 10 or at the end of the phase, and so nothing of epochs 1-2 either (their snapshots
    # and records wait in memory for the block written with the resume point).
    killed = tmp_path / "killed"
    ds = data.load_dataset(cfg.dataset)
    trainer = train.make_train(cfg, *ds.x.shape, ds.n_clusters)
    state, x = trainer.init_pretrain(train.seed_keys(cfg)), jnp.asarray(ds.x)
    ckpts = checkpointing.PhaseCheckpoints(killed, "pretrain", resume_every=10)
    for epoch in (1, 2):
        state, out = trainer.pretrain_epoch(state, x)
        ckpts.save(epoch, state, out, {"epoch": epoch, "loss": {}})
    ckpts.wait()
    ckpts.close()
    assert checkpointing.list_epochs(killed, "pretrain") == []
    assert checkpointing.load_records(killed, "pretrain") == []
    assert checkpointing.list_epochs(killed, "pretrain", "resume") == []
    assert train.train_and_evaluate(cfg, killed)["seeds"] == reference["seeds"]
    for phase, last in (("pretrain", 3), ("clustering", 2)):
        assert [r["epoch"] for r in checkpointing.load_records(killed, phase)] == list(range(1, last + 1))
        for u, v in zip(leaves(checkpointing.load_state(killed, last, phase)),
                        leaves(checkpointing.load_state(tmp_path / "reference", last, phase))):
            np.testing.assert_array_equal(u, v)


def test_a_run_written_before_resume_points_is_refused_with_a_clear_message(tmp_path):
    (tmp_path / "pretrain" / "state" / "1").mkdir(parents=True)
    with pytest.raises(ValueError, match="before resume points existed"):
        checkpointing.PhaseCheckpoints(tmp_path, "pretrain")


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path):
    train.train_and_evaluate(tiny_config("dec", clustering_epochs=1), tmp_path)
    with pytest.raises(ValueError, match="different configuration.*learning_rate"):
        train.train_and_evaluate(tiny_config("dec", clustering_epochs=1, **{"clustering.learning_rate": 0.1}),
                                 tmp_path)


def test_a_non_finite_loss_stops_training(tmp_path):
    cfg = tiny_config("dec", pretrain_epochs=3, **{"pretrain.learning_rate": 1e30})
    with pytest.raises(FloatingPointError, match="non-finite reconstruction loss"):
        train.train_and_evaluate(cfg, tmp_path)


def test_bad_input_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="batch"):
        train.train_and_evaluate(tiny_config("dec", batch_size=10_000), tmp_path / "a")
    with pytest.raises(ValueError, match="seeds"):
        train.train_and_evaluate(tiny_config("dec", seeds=0), tmp_path / "b")


# ---------------------------------------------------------------------------
# A real process, killed and resumed.

CLI_ARGS = ["--config", "configs/dcn_digits.py:smoke", "--config.dataset.subsample=400",
            "--config.batch_size=64", "--config.seeds=2", "--config.pretrain.epochs=4",
            "--config.clustering.epochs=6", "--config.kmeans.n_init=3", "--config.progress=False",
            "--config.checkpoint.resume_every=2"]


def start_cli(workdir):
    # Output goes to a file: a pipe nobody reads would block the process once full.
    log = open(f"{workdir}.log", "a+")
    return subprocess.Popen([sys.executable, "-m", "dcjax.main", *CLI_ARGS, f"--workdir={workdir}"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)


def output(workdir) -> str:
    return Path(f"{workdir}.log").read_text()


def kill_when(proc, path: Path, min_steps: int, timeout=240):
    """SIGKILL the process once `path` holds `min_steps` finished orbax steps."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [p for p in path.glob("*") if p.name.isdigit()] if path.exists() else []
        if len(steps) >= min_steps:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed:\n" + output(path.parents[1]))
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for checkpoints")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    killed = tmp_path / "killed"
    # Killed after a resume point: what was written after it (model states,
    # snapshots, records) is dropped and replayed.
    kill_when(start_cli(killed), killed / "pretrain" / "resume", 1)       # in pretraining, after epoch 2
    kill_when(start_cli(killed), killed / "clustering" / "resume", 2)     # in clustering, after epoch 2
    assert start_cli(killed).wait(timeout=300) == 0, output(killed)
    assert "algorithm: ACC" in output(killed) and "kmeans_on_embedding: ACC" in output(killed)

    reference = tmp_path / "reference"
    assert start_cli(reference).wait(timeout=300) == 0, output(reference)

    for phase, last in (("pretrain", 4), ("clustering", 6)):
        assert checkpointing.list_epochs(killed, phase) == checkpointing.list_epochs(reference, phase)
        a, b = checkpointing.load_state(killed, last, phase), checkpointing.load_state(reference, last, phase)
        for u, v in zip(leaves(a), leaves(b)):
            np.testing.assert_array_equal(u, v)
        ra, rb = checkpointing.load_records(killed, phase), checkpointing.load_records(reference, phase)
        assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
        assert [r["batch_loss"] for r in ra] == [r["batch_loss"] for r in rb]
    sa = json.loads((killed / "summary.json").read_text())
    sb = json.loads((reference / "summary.json").read_text())
    assert sa["seeds"] == sb["seeds"]


def test_dec_optimizer_skips_the_decoder_and_matches_adam_elsewhere():
    """DEC's optimiser leaves out the decoder (zero gradient): no moments for
    it, a zero update, and exactly Adam's updates for encoder and centers."""
    model = make_autoencoder(12, tiny_config("dec").model)
    ae = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12)))["params"]
    params = {"ae": ae, "centers": jnp.ones((3, 4))}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    grads["ae"] = {k: jax.tree.map(jnp.zeros_like, v) if k.startswith("decoder") else v
                   for k, v in grads["ae"].items()}
    adam = optax.adam(1e-3)
    dec_tx = train._clustering_optimizer(1e-3, uses_decoder=False)
    want, _ = adam.update(grads, adam.init(params), params)
    got, state = dec_tx.update(grads, dec_tx.init(params), params)
    for a, b in zip(leaves(want), leaves(got)):
        np.testing.assert_array_equal(a, b)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    n_decoder = sum(p.size for k, v in ae.items() if k.startswith("decoder") for p in jax.tree.leaves(v))
    moments = sum(leaf.size for leaf in jax.tree.leaves(state) if leaf.ndim)
    assert moments == 2 * (n_params - n_decoder)
    full_tx = train._clustering_optimizer(1e-3, uses_decoder=True)  # IDEC, DCN, DKM: every parameter
    assert sum(leaf.size for leaf in jax.tree.leaves(full_tx.init(params)) if leaf.ndim) == 2 * n_params
