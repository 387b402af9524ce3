"""dcjax.metrics against scikit-learn (float64) and brute force.

Scores sklearn also has must agree to 1e-5 relative on random data, blobs and
degenerate inputs; the inputs are float32 and sklearn gets the same float32
values, upcast."""
import itertools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from sklearn import metrics as skm
from sklearn.datasets import make_blobs

try:
    from dcjax import metrics as M
except ImportError:  # running without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dcjax import metrics as M

RTOL = 1e-5
# NMI and ARI of nearly independent labelings are (statistic - its expectation),
# a difference float32 resolves to ~1e-8 absolute (sklearn uses exact integers):
# 1e-5 relative holds down to |score| ~ 1e-3; below that this absolute floor.
LABEL_ATOL = 1e-8


# ------------------------------------------------------------------ data

def _as_float32(x):
    return np.asarray(x, np.float32)


def _blobs(n=240, d=6, k=5, seed=0, shift=0.0):
    x, y = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    return _as_float32(x + shift), y.astype(np.int32), k


def _random(n=181, d=4, k=4, seed=1):
    rng = np.random.default_rng(seed)
    return _as_float32(rng.normal(size=(n, d))), rng.integers(0, k, n).astype(np.int32), k


def _empty_clusters():
    """Labels drawn from {0, 2, 5} of 0..6: four clusters are empty."""
    rng = np.random.default_rng(2)
    x = _as_float32(rng.normal(size=(90, 3)) + rng.integers(0, 3, (90, 1)) * 3.0)
    return x, rng.choice([0, 2, 5], 90).astype(np.int32), 7


def _singletons():
    """Blobs plus three clusters of one point each."""
    x, y, k = _blobs(n=120, d=3, k=3, seed=3)
    y = y.copy()
    y[[0, 50, 100]] = [3, 4, 5]
    return x, y, 6


def _duplicates():
    """One cluster is six copies of a single point; others are blobs."""
    x, y, k = _blobs(n=100, d=5, k=3, seed=4)
    x = np.concatenate([x, np.repeat(_as_float32([[4.0, -3.0, 2.0, 0.5, 1.0]]), 6, axis=0)])
    return x, np.concatenate([y, np.full(6, 3, np.int32)]), 4


def _identical_points():
    """Every point the same: silhouette 0, CH 1.0, DB 0.0 by sklearn's conventions."""
    return np.full((40, 3), 1.7, np.float32), (np.arange(40) % 3).astype(np.int32), 3


VALID = {
    "blobs": _blobs,
    "blobs_far_from_origin": lambda: _blobs(shift=300.0),
    "random": _random,
    "empty_clusters": _empty_clusters,
    "singletons": _singletons,
    "duplicates": _duplicates,
    "identical_points": _identical_points,
}

SKLEARN_VS_OURS = [
    (skm.silhouette_score, M.silhouette),
    (skm.calinski_harabasz_score, M.calinski_harabasz),
    (skm.davies_bouldin_score, M.davies_bouldin),
]


# ------------------------------------------- label-free scores vs sklearn

@pytest.mark.parametrize("sk_score, our_score", SKLEARN_VS_OURS, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("case", VALID)
def test_label_free_scores_match_sklearn(case, sk_score, our_score):
    x, y, k = VALID[case]()
    expected = sk_score(x.astype(np.float64), y)
    np.testing.assert_allclose(float(our_score(jnp.asarray(x), jnp.asarray(y), k)), expected, rtol=RTOL)


def test_identical_points_follow_sklearn_conventions():
    x, y, k = _identical_points()
    z, labels = jnp.asarray(x), jnp.asarray(y)
    assert float(M.silhouette(z, labels, k)) == 0.0
    assert float(M.calinski_harabasz(z, labels, k)) == 1.0
    assert float(M.davies_bouldin(z, labels, k)) == 0.0


@pytest.mark.parametrize("labels", [np.zeros(30, np.int32), np.arange(30, dtype=np.int32)],
                         ids=["one_cluster", "k_equals_n"])
def test_outside_sklearns_domain_is_nan(labels):
    x = _as_float32(np.random.default_rng(5).normal(size=(30, 3)))
    for sk_score, our_score in SKLEARN_VS_OURS:
        with pytest.raises(ValueError):
            sk_score(x, labels)
        assert np.isnan(float(our_score(jnp.asarray(x), jnp.asarray(labels), 30)))
    assert np.isnan(float(M.simplified_silhouette(jnp.asarray(x), jnp.asarray(labels), 30)))


def test_silhouette_samples_match_sklearn():
    x, y, k = _singletons()
    ours = np.asarray(M.silhouette_samples(jnp.asarray(x), jnp.asarray(y), k))
    np.testing.assert_allclose(ours, skm.silhouette_samples(x.astype(np.float64), y), rtol=RTOL, atol=1e-6)
    assert np.all(ours[[0, 50, 100]] == 0.0)  # singleton clusters


@pytest.mark.parametrize("chunk_size", [1, 16, 64, 1000])
def test_chunked_silhouette_any_chunk_size(chunk_size):
    x, y, k = _random()  # N = 181: a multiple of none of the chunk sizes above 1
    expected = skm.silhouette_score(x.astype(np.float64), y)
    np.testing.assert_allclose(float(M.silhouette(jnp.asarray(x), jnp.asarray(y), k, chunk_size)), expected, rtol=RTOL)


def test_silhouette_sampled_is_the_textbook_estimator():
    x, y, k = _blobs()
    z, labels, key = jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(7)
    n, m = len(y), 60
    estimate, stderr = M.silhouette_sampled(z, labels, k, key, m)
    rows = np.asarray(jax.random.choice(key, n, (m,), replace=False))
    s = skm.silhouette_samples(x.astype(np.float64), y)[rows]
    np.testing.assert_allclose(float(estimate), s.mean(), rtol=RTOL)
    np.testing.assert_allclose(float(stderr), s.std(ddof=1) / np.sqrt(m) * np.sqrt((n - m) / (n - 1)), rtol=1e-4)
    exact = skm.silhouette_score(x.astype(np.float64), y)
    assert abs(float(estimate) - exact) < 4 * float(stderr)
    # the whole population: exact value, no sampling error
    estimate, stderr = M.silhouette_sampled(z, labels, k, key, n)
    np.testing.assert_allclose(float(estimate), exact, rtol=RTOL)
    assert float(stderr) == 0.0


def _simplified_silhouette_reference(x, y):
    present = np.unique(y)
    centroids = np.stack([x[y == c].mean(0) for c in present])
    dist = np.linalg.norm(x[:, None, :] - centroids[None], axis=-1)
    own = np.searchsorted(present, y)
    a = dist[np.arange(len(y)), own]
    dist[np.arange(len(y)), own] = np.inf
    b = dist.min(1)
    s = np.where(np.maximum(a, b) > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    sizes = np.bincount(y)
    return np.where(sizes[y] > 1, s, 0.0).mean()


@pytest.mark.parametrize("case", ["blobs", "random", "empty_clusters", "singletons", "duplicates"])
def test_simplified_silhouette(case):
    x, y, k = VALID[case]()
    expected = _simplified_silhouette_reference(x.astype(np.float64), y)
    np.testing.assert_allclose(float(M.simplified_silhouette(jnp.asarray(x), jnp.asarray(y), k)), expected, rtol=RTOL)


def test_dispersions():
    x, y, k = _empty_clusters()
    xd = x.astype(np.float64)
    within = sum(((xd[y == c] - xd[y == c].mean(0)) ** 2).sum() for c in np.unique(y))
    between = sum((y == c).sum() * ((xd[y == c].mean(0) - xd.mean(0)) ** 2).sum() for c in np.unique(y))
    z, labels = jnp.asarray(x), jnp.asarray(y)
    np.testing.assert_allclose(float(M.within_cluster_dispersion(z, labels, k)), within, rtol=RTOL)
    np.testing.assert_allclose(float(M.between_cluster_dispersion(z, labels, k)), between, rtol=RTOL)
    np.testing.assert_allclose(within + between, ((xd - xd.mean(0)) ** 2).sum(), rtol=1e-12)


# --------------------------------------------- label-based scores vs sklearn

def _label_pairs():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 5, 500)
    noisy = np.where(rng.random(500) < 0.8, rng.permutation(5)[y], rng.integers(0, 5, 500))
    big = rng.integers(0, 10, 70_000)
    return {  # name: (y_true, y_pred, n_true, n_pred)
        "independent": (y, rng.integers(0, 5, 500), 5, 5),
        "noisy_permuted": (y, noisy, 5, 5),
        "more_clusters_than_classes": (rng.integers(0, 3, 300), rng.integers(0, 6, 300), 3, 6),
        "identical": (y, y, 5, 5),
        "permuted": (y, rng.permutation(5)[y], 5, 5),
        "empty_clusters": (y, rng.choice([1, 4, 6], 500), 5, 8),
        "both_one_cluster": (np.zeros(50), np.full(50, 2), 1, 3),
        "one_cluster_vs_many": (np.zeros(50), rng.integers(0, 4, 50), 1, 4),
        "all_singletons_both": (np.arange(12), rng.permutation(12), 12, 12),
        "all_singletons_vs_one": (np.arange(12), np.zeros(12), 12, 1),
        "n70000_nearly_independent": (big, np.where(rng.random(70_000) < 0.02, big, rng.integers(0, 10, 70_000)), 10, 10),
        "n70000_independent": (big, rng.integers(0, 10, 70_000), 10, 10),
    }


LABEL_PAIRS = _label_pairs()


@pytest.mark.parametrize("case", LABEL_PAIRS)
def test_nmi_and_ari_match_sklearn(case):
    y_true, y_pred, n_true, n_pred = LABEL_PAIRS[case]
    t, p = jnp.asarray(y_true, jnp.int32), jnp.asarray(y_pred, jnp.int32)
    np.testing.assert_allclose(float(M.normalized_mutual_info(t, p, n_true, n_pred)),
                               skm.normalized_mutual_info_score(y_true, y_pred), rtol=RTOL, atol=LABEL_ATOL)
    np.testing.assert_allclose(float(M.adjusted_rand_index(t, p, n_true, n_pred)),
                               skm.adjusted_rand_score(y_true, y_pred), rtol=RTOL, atol=LABEL_ATOL)


def _brute_force_accuracy(y_true, y_pred, size):
    """Best accuracy over every map cluster -> class (a permutation of 0..size-1)."""
    return max(np.mean(np.asarray(perm)[y_pred] == y_true) for perm in itertools.permutations(range(size)))


@pytest.mark.parametrize("n_classes, n_clusters", [(4, 4), (5, 5), (3, 5), (5, 3)])
def test_accuracy_equals_brute_force(n_classes, n_clusters):
    rng = np.random.default_rng(n_classes * 10 + n_clusters)
    y_true = rng.integers(0, n_classes, 200).astype(np.int32)
    for y_pred in (rng.integers(0, n_clusters, 200),                                     # random
                   np.where(rng.random(200) < 0.7, y_true % n_clusters, rng.integers(0, n_clusters, 200))):
        ours = M.cluster_accuracy(jnp.asarray(y_true), jnp.asarray(y_pred, jnp.int32), n_clusters, n_classes)
        expected = _brute_force_accuracy(y_true, y_pred, max(n_classes, n_clusters))
        assert float(ours) == pytest.approx(expected, abs=1e-7)


def test_accuracy_batched_and_under_jit_vmap():
    rng = np.random.default_rng(12)
    y_true = jnp.asarray(rng.integers(0, 4, 150), jnp.int32)
    y_pred = jnp.asarray(rng.integers(0, 4, (2, 3, 150)), jnp.int32)
    loop = np.array([[float(M.cluster_accuracy(y_true, y_pred[i, j], 4)) for j in range(3)] for i in range(2)])
    np.testing.assert_array_equal(np.asarray(M.cluster_accuracy_batched(y_true, y_pred, 4)), loop)
    jitted = jax.jit(jax.vmap(jax.vmap(lambda p: M.cluster_accuracy(y_true, p, 4))))
    np.testing.assert_array_equal(np.asarray(jitted(y_pred)), loop)


def test_out_of_range_labels_give_nan():
    x, y, k = _blobs()
    bad = jnp.asarray(y).at[3].set(k)
    z = jnp.asarray(x)
    for score in (M.silhouette, M.simplified_silhouette, M.calinski_harabasz, M.davies_bouldin,
                  M.within_cluster_dispersion, M.count_empty_clusters):
        assert np.isnan(float(score(z, bad, k) if score is not M.count_empty_clusters else score(bad, k)))
    assert np.isnan(float(M.cluster_accuracy(jnp.asarray(y), bad, k)))
    assert np.isnan(float(M.normalized_mutual_info(jnp.asarray(y), bad, k, k)))
    assert np.isnan(float(M.adjusted_rand_index(bad, jnp.asarray(y), k, k)))


# ------------------------------------------ sizes, soft assignments, embedding

def test_cluster_size_scores():
    labels = jnp.asarray(np.repeat(np.arange(5), [60, 30, 8, 1, 1]), jnp.int32)   # cluster 5 of 6 is empty
    sizes = np.array([60, 30, 8, 1, 1, 0])
    np.testing.assert_allclose(float(M.cluster_size_entropy(labels, 6)), scipy_entropy(sizes), rtol=RTOL)
    np.testing.assert_allclose(float(M.cluster_size_entropy(labels, 6, normalize=True)),
                               scipy_entropy(sizes) / np.log(6), rtol=RTOL)
    assert float(M.count_empty_clusters(labels, 6)) == 1
    assert float(M.count_tiny_clusters(labels, 6)) == 2       # threshold 0.1 * 100 / 6 = 1.67 points
    assert float(M.count_tiny_clusters(labels, 6, tiny_fraction=0.5)) == 3   # threshold 8.3
    balanced = jnp.asarray(np.arange(100) % 4, jnp.int32)
    assert float(M.cluster_size_entropy(balanced, 4, normalize=True)) == pytest.approx(1.0, rel=1e-6)


def test_soft_assignment_confidence():
    rng = np.random.default_rng(13)
    probs = rng.dirichlet(np.ones(5), 80).astype(np.float32)
    np.testing.assert_allclose(float(M.mean_max_probability(jnp.asarray(probs))), probs.max(1).mean(), rtol=RTOL)
    np.testing.assert_allclose(float(M.mean_assignment_entropy(jnp.asarray(probs))),
                               scipy_entropy(probs.astype(np.float64), axis=1).mean(), rtol=RTOL)
    uniform, one_hot = jnp.full((10, 4), 0.25), jax.nn.one_hot(jnp.arange(10) % 4, 4)
    assert float(M.mean_max_probability(uniform)) == pytest.approx(0.25)
    assert float(M.mean_assignment_entropy(uniform, normalize=True)) == pytest.approx(1.0, rel=1e-6)
    assert float(M.mean_max_probability(one_hot)) == 1.0
    assert float(M.mean_assignment_entropy(one_hot)) == 0.0


def test_effective_rank():
    rng = np.random.default_rng(14)
    z = rng.normal(size=(200, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1])
    s = np.linalg.svd(z, compute_uv=False)
    expected = np.exp(scipy_entropy(s / s.sum()))
    np.testing.assert_allclose(float(M.effective_rank(jnp.asarray(z, jnp.float32))), expected, rtol=RTOL)
    rank_one = jnp.asarray(np.outer(rng.normal(size=50), rng.normal(size=4)), jnp.float32)
    assert float(M.effective_rank(rank_one)) == pytest.approx(1.0, rel=1e-4)
    orthogonal = jnp.asarray(np.linalg.qr(rng.normal(size=(50, 4)))[0] * 3.0, jnp.float32)
    assert float(M.effective_rank(orthogonal)) == pytest.approx(4.0, rel=1e-5)


def test_reconstruction_mse():
    rng = np.random.default_rng(15)
    x, x_rec = rng.normal(size=(2, 30, 8)).astype(np.float32)
    np.testing.assert_allclose(float(M.reconstruction_mse(x, x_rec)), ((x.astype(np.float64) - x_rec) ** 2).mean(), rtol=RTOL)


# -------------------------------------------- stability and seed agreement

def test_stability_is_permutation_invariant():
    _, y, k = _blobs()
    relabelled = jnp.asarray(np.random.default_rng(16).permutation(k)[y], jnp.int32)
    scores = M.assignment_stability(jnp.asarray(y), relabelled, k)
    assert float(scores["changed_fraction"]) == 0.0
    assert float(scores["ari_vs_previous"]) == 1.0
    assert float(scores["nmi_vs_previous"]) == 1.0


def test_consecutive_stability_and_seed_agreement():
    rng = np.random.default_rng(17)
    base = rng.integers(0, 4, 120)
    runs = np.stack([np.where(rng.random(120) < 0.1 * t, rng.integers(0, 4, 120), base) for t in range(4)])
    runs = jnp.asarray(runs, jnp.int32)
    stability = M.consecutive_stability(runs, 4)
    r = np.asarray(runs)
    for t in range(3):
        np.testing.assert_allclose(float(stability["ari_vs_previous"][t]), skm.adjusted_rand_score(r[t], r[t + 1]), rtol=RTOL, atol=LABEL_ATOL)
        np.testing.assert_allclose(float(stability["nmi_vs_previous"][t]), skm.normalized_mutual_info_score(r[t], r[t + 1]), rtol=RTOL, atol=LABEL_ATOL)
        assert float(stability["changed_fraction"][t]) == pytest.approx(1 - _brute_force_accuracy(r[t], r[t + 1], 4), abs=1e-7)
    agreement = M.seed_agreement(runs, 4)
    pairs = list(itertools.combinations(range(4), 2))
    np.testing.assert_allclose(float(agreement["mean_pairwise_ari"]),
                               np.mean([skm.adjusted_rand_score(r[i], r[j]) for i, j in pairs]), rtol=RTOL, atol=LABEL_ATOL)
    np.testing.assert_allclose(float(agreement["mean_pairwise_nmi"]),
                               np.mean([skm.normalized_mutual_info_score(r[i], r[j]) for i, j in pairs]), rtol=RTOL, atol=LABEL_ATOL)
    assert np.isnan(float(M.seed_agreement(runs[:1], 4)["mean_pairwise_ari"]))


# ---------------------------------------------------- bundles, jit and vmap

LABEL_FREE_KEYS = {
    "silhouette", "silhouette_se", "simplified_silhouette", "calinski_harabasz", "davies_bouldin",
    "within_dispersion", "between_dispersion", "size_entropy", "n_empty_clusters", "n_tiny_clusters",
    "mean_max_prob", "mean_assignment_entropy", "effective_rank", "reconstruction_mse",
}


def _three_seeds(n=150, d=4, k=3):
    rng = np.random.default_rng(18)
    z = rng.normal(size=(3, n, d)).astype(np.float32) + 4.0 * rng.integers(0, k, (3, n, 1))
    labels = rng.integers(0, k, (3, n)).astype(np.int32)
    probs = rng.dirichlet(np.ones(k), (3, n)).astype(np.float32)
    return jnp.asarray(z), jnp.asarray(labels), jnp.asarray(probs), k


def test_label_free_scores_vmap_over_seeds_equals_loop():
    z, labels, probs, k = _three_seeds()
    x = jnp.ones((3, 150, 7))
    batched = jax.vmap(lambda zs, ls, ps, xs: M.label_free_scores(zs, ls, k, ps, xs, xs * 0.5))(z, labels, probs, x)
    assert set(batched) == LABEL_FREE_KEYS
    for s in range(3):
        single = M.label_free_scores(z[s], labels[s], k, probs[s], x[s], x[s] * 0.5)
        for key in LABEL_FREE_KEYS:
            np.testing.assert_allclose(float(batched[key][s]), float(single[key]), rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(np.asarray(batched["silhouette"]),
                               [skm.silhouette_score(np.asarray(z[s], np.float64), labels[s]) for s in range(3)], rtol=RTOL)
    np.testing.assert_allclose(np.asarray(batched["reconstruction_mse"]), 0.25)


def test_label_free_scores_missing_inputs_and_sampling():
    z, labels, _, k = _three_seeds()
    scores = M.label_free_scores(z[0], labels[0], k, silhouette_sample_size=50, key=jax.random.PRNGKey(0))
    assert set(scores) == LABEL_FREE_KEYS
    for key in ("mean_max_prob", "mean_assignment_entropy", "reconstruction_mse"):
        assert np.isnan(float(scores[key]))
    assert float(scores["silhouette_se"]) > 0


def test_label_based_scores_vmap_over_seeds_equals_sklearn():
    _, labels, _, k = _three_seeds()
    y_true = jnp.asarray(np.random.default_rng(19).integers(0, k, 150), jnp.int32)
    batched = jax.jit(jax.vmap(lambda p: M.label_based_scores(y_true, p, k)))(labels)
    assert set(batched) == {"acc", "nmi", "ari"}
    for s in range(3):
        p = np.asarray(labels[s])
        np.testing.assert_allclose(float(batched["nmi"][s]), skm.normalized_mutual_info_score(y_true, p), rtol=RTOL, atol=LABEL_ATOL)
        np.testing.assert_allclose(float(batched["ari"][s]), skm.adjusted_rand_score(y_true, p), rtol=RTOL, atol=LABEL_ATOL)
        assert float(batched["acc"][s]) == pytest.approx(_brute_force_accuracy(np.asarray(y_true), p, k), abs=1e-7)
