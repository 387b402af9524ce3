"""The 'public' preset (`--config unseen_dec_usps:public`): the set-up of
UNSEEN's public code, and the ragged last batch it trains on.

The public code is GitHub collinleiber/UNSEEN at d0dd98b (`unseen.py`), run
against ClustPy 2c02615 (2024-11-07, the same day). Where each value comes from
is cited beside it, as file:line of those two commits."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from dcjax import config as config_lib, data, train, trainer as trainer_lib
from dcjax.models import autoencoder


@pytest.mark.parametrize("name", [f"unseen_{a}_{d}" for a in ("dcn", "dec", "dkm")
                                  for d in ("usps", "optdigits", "pendigits")])
def test_the_public_preset_is_what_the_public_code_uses(name):
    c = config_lib.config_from_name(name, "public")
    plain = config_lib.config_from_name(name)
    # ClustPy neural_networks/feedforward_autoencoder.py:63:
    #   activation_fn: torch.nn.Module = torch.nn.LeakyReLU  (negative_slope 0.01, torch's default)
    # and torch.nn.Linear's default initialisation.
    assert c.model.activation == "leaky_relu" and plain.model.activation == "relu"
    assert autoencoder.ACTIVATIONS["leaky_relu"](jnp.float32(-1.0)) == pytest.approx(-0.01)
    assert c.model.weight_init == "torch"
    # One k-means start at k_init and at the end: scikit-learn's KMeans default
    # (n_init='auto' = 1 for k-means++) in ClustPy deep/_utils.py:354
    # (run_initial_clustering: clustering_class(n_clusters=..., random_state=...))
    # and in unseen.py:126 (KMeans(n_clusters=clustering_centers.shape[0], random_state=...)).
    # dcjax reads kmeans.n_init at both places (trainer.kmeans_host, train._summary).
    assert c.kmeans.n_init == 1 and plain.kmeans.n_init == 10
    # The reference code's switches: DEC/DKM centers replaced at a removal by a
    # Parameter the optimiser never sees (unseen.py:255, :543); DCN's centers
    # pruned, its counts not (unseen.py:860).
    assert c.unseen.reference_code is True and c.unseen.enabled is True
    # ClustPy deep/_data_utils.py:276: get_dataloader(X, batch_size, True, False),
    # drop_last=False; deep/_train_utils.py:144 the same for the pretraining.
    assert c.last_batch == "keep" and plain.last_batch == "drop"
    # ClustPy deep/dkm.py:251: loss = (squared_diffs.sqrt() * probs).sum(1).mean(),
    # called by UNSEEN's DKM module (unseen.py:470): the unsquared distance.
    assert c.dkm.distance == "euclidean" and plain.dkm.distance == "squared"
    # Already the protocol's (UNSEEN_DEC's defaults, unseen.py:362-365;
    # ClustPy dec.py:501-503): batch 256, Adam 1e-3 / 1e-4, 100 + 150 epochs,
    # k_init 35, t 0.5.
    assert (c.batch_size, c.pretrain.learning_rate, c.clustering.learning_rate) == (256, 1e-3, 1e-4)
    assert (c.pretrain.epochs, c.clustering.epochs, c.unseen.k_init, c.unseen.t) == (100, 150, 35, 0.5)
    # Nothing else moves.
    changed = {k for k, v in config_lib.flat_fields(c).items() if config_lib.flat_fields(plain)[k] != v}
    assert changed == {"model.activation", "kmeans.n_init", "unseen.reference_code", "last_batch", "dkm.distance"}
    config_lib.validate(c)


def test_presets_combine_and_unknown_ones_are_refused():
    c = config_lib.config_from_name("unseen_dec_usps", "public,seeds=3")
    assert c.seeds == 3 and c.last_batch == "keep"
    with pytest.raises(config_lib.ConfigError, match="public"):
        config_lib.config_from_name("unseen_dec_usps", "publik")


def test_the_last_batch_is_the_rest_of_the_same_permutation():
    rng = jax.random.PRNGKey(3)
    full = np.asarray(data.batch_indices(rng, 103, 16))
    tail = np.asarray(data.last_batch_indices(rng, 103, 16))
    assert full.shape == (6, 16) and tail.shape == (7,)
    np.testing.assert_array_equal(np.concatenate([full.ravel(), tail]), np.asarray(jax.random.permutation(rng, 103)))


def _batch_losses(workdir, phase):
    rows = [json.loads(line) for line in (workdir / phase / "records.jsonl").read_text().splitlines()]
    return [np.asarray(next(iter(r["batch_loss"].values()))) for r in rows if "batch_loss" in r]


def test_kept_last_batch_is_one_more_step_of_its_own_size(tmp_path, monkeypatch):
    """600 rows in batches of 64: 9 full steps, and a 10th of 24 rows when
    kept. The k-means starts of the run are those of the config, at k_init
    and at the end."""
    starts = []
    real = trainer_lib.KMeans

    def recording(*args, **kwargs):
        starts.append(kwargs["n_init"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_lib, "KMeans", recording)
    monkeypatch.setattr(train, "KMeans", recording)
    overrides = {"unseen.enabled": True, "unseen.k_init": 10, "dataset.subsample": 600,
                 "clustering_epochs": 2, "pretrain_epochs": 2}
    keep = tiny_config("dec", **overrides)
    config_lib.apply_presets(keep, "public")
    keep.batch_size = 64
    train.train_and_evaluate(keep, tmp_path / "keep")
    assert starts and set(starts) == {1}
    drop = tiny_config("dec", **overrides, last_batch="drop")
    train.train_and_evaluate(drop, tmp_path / "drop")
    for phase in ("pretrain", "clustering"):
        kept, dropped = _batch_losses(tmp_path / "keep", phase), _batch_losses(tmp_path / "drop", phase)
        assert kept and all(np.shape(b)[-1] == 10 for b in kept), phase
        assert dropped and all(np.shape(b)[-1] == 9 for b in dropped), phase


def test_keep_equals_drop_when_the_batch_divides_the_data(tmp_path):
    """No ragged batch, nothing kept: the two settings train the same bits."""
    runs = {}
    for mode in ("keep", "drop"):
        c = tiny_config("dec", **{"unseen.enabled": True, "unseen.k_init": 10, "dataset.subsample": 640,
                                  "clustering_epochs": 2, "pretrain_epochs": 1, "last_batch": mode})
        runs[mode] = train.train_and_evaluate(c, tmp_path / mode)
    assert runs["keep"]["seeds"] == runs["drop"]["seeds"]
