"""Each algorithm's pieces against their textbook definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import config as config_lib, methods
from dcjax.methods import dcn, dec, dkm
from dcjax.methods.base import LossInputs, nearest_center, squared_distances


def test_dcn_center_update_equals_the_sequential_rule():
    """The closed-form batch update is the paper's point-by-point rule."""
    rng = np.random.default_rng(0)
    k, e, b = 4, 3, 50
    centers = rng.normal(size=(k, e)).astype(np.float32)
    z = rng.normal(size=(b, e)).astype(np.float32)
    method = dcn.make_dcn(config_lib.make_config("dcn", "digits"))
    extras = method.init(jnp.asarray(z), jnp.asarray(centers), jnp.zeros(b, jnp.int32))
    new_extras, new_centers = method.after_step(extras, jnp.asarray(centers), jnp.asarray(z), jnp.arange(b))

    labels = np.argmin(((z[:, None] - centers[None]) ** 2).sum(-1), axis=1)
    c, counts = centers.astype(np.float64).copy(), np.full(k, 100.0)
    for i in range(b):  # ClustPy / original DCN: one point at a time
        counts[labels[i]] += 1
        eta = 1.0 / counts[labels[i]]
        c[labels[i]] = (1 - eta) * c[labels[i]] + eta * z[i]
    np.testing.assert_allclose(np.asarray(new_centers), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(new_extras["counts"]), counts)
    np.testing.assert_array_equal(np.asarray(new_extras["labels"]), labels)


def test_dec_soft_assignment_and_target():
    z = jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    centers = jnp.array([[0.0, 0.0], [5.0, 5.0]])
    q = dec.student_t(z, centers, 1.0)
    d2 = np.array([[0, 50], [1, 41], [50, 0]], float)
    expected = 1 / (1 + d2)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(q, expected, rtol=1e-6)
    p = dec.target_distribution(q)
    w = expected ** 2 / expected.sum(0)
    np.testing.assert_allclose(p, w / w.sum(1, keepdims=True), rtol=1e-6)
    # P is sharper than Q: its most likely cluster gets more mass
    assert np.all(np.max(np.asarray(p), 1) >= np.max(np.asarray(q), 1) - 1e-7)
    assert float(dec.kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-6)


def test_dec_gradient_does_not_flow_through_the_target():
    z = jnp.array([[0.3, 0.1], [1.0, -0.5], [4.0, 5.0]])
    centers = jnp.array([[0.0, 0.0], [5.0, 5.0]])
    method = methods.get_method(config_lib.make_config("dec", "digits"))

    def loss(c):
        inp = LossInputs(z, None, None, c, {}, jnp.arange(3), jnp.int32(0))
        return method.loss(inp)[0]

    def manual(c):
        q = dec.student_t(z, c, 1.0)
        p = jax.lax.stop_gradient(dec.target_distribution(q))
        return -jnp.mean(jnp.sum(p * jnp.log(q + 1e-8), 1))  # ClustPy's cross-entropy form

    np.testing.assert_allclose(jax.grad(loss)(centers), jax.grad(manual)(centers), rtol=1e-5, atol=1e-7)


def test_dkm_annealing_schedule_is_the_papers():
    alphas = dkm.annealed_alphas()
    assert len(alphas) == 40 and alphas[0] == 0.1
    assert alphas[1] == pytest.approx(0.1 * 2 ** (1 / np.log(2) ** 2))
    assert all(b > a for a, b in zip(alphas, alphas[1:]))


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_dkm_loss_with_large_alpha_is_the_kmeans_loss(distance):
    cfg = config_lib.make_config("dkm", "digits")
    cfg.dkm.distance = distance
    method = methods.get_method(cfg)
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(30, 3)), jnp.float32)
    centers = jnp.asarray(rng.normal(size=(4, 3)) * 3, jnp.float32)
    x = jnp.zeros((30, 2))
    _, parts = method.loss(LossInputs(z, x, x, centers, {}, jnp.arange(30), jnp.int32(0)))
    d2 = np.asarray(squared_distances(z, centers)).min(1)
    expected = d2.mean() if distance == "squared" else np.sqrt(d2).mean()
    assert float(parts["clustering"]) == pytest.approx(expected, rel=1e-3)


def test_every_method_assigns_to_the_nearest_center():
    z = jnp.array([[0.0, 0.1], [4.9, 5.0], [2.6, 2.6]])
    centers = jnp.array([[0.0, 0.0], [5.0, 5.0]])
    np.testing.assert_array_equal(nearest_center(z, centers), [0, 1, 1])
    for name in methods.REGISTRY:
        m = methods.get_method(config_lib.make_config(name, "digits"))
        np.testing.assert_array_equal(m.assign(centers, z), [0, 1, 1])
        if m.soft_assign is not None:
            probs = m.soft_assign(centers, z, jnp.int32(0))
            np.testing.assert_array_equal(np.argmax(probs, 1), [0, 1, 1])


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown algorithm"):
        config_lib.make_config("kmeans++", "digits")
    cfg = config_lib.make_config("dec", "digits")
    cfg.algorithm = "nope"
    with pytest.raises(ValueError, match="unknown algorithm"):
        methods.get_method(cfg)
    cfg = config_lib.make_config("dkm", "digits")
    cfg.dkm.alpha_schedule = "cosine"
    with pytest.raises(ValueError, match="alpha_schedule"):
        methods.get_method(cfg)
