"""Clustering scores, in JAX, for evaluation and label-free epoch selection.

Every score is its textbook definition, jit-able and vmap-able (over seeds,
epochs, ...). Conventions:

* `z` (N, d) float embedding; `labels` (N,) int in 0..n_clusters-1;
  `probs` (N, k) soft assignments whose rows sum to 1.
* `n_clusters` (and `n_true`/`n_pred`/`n_classes`) are static Python ints, so
  every shape is static under `jax.jit`.
* Clusters are the labels *present*: an empty cluster (a label in 0..k-1 that
  no point has) is ignored, as scikit-learn does with the labels it sees.
* Masked clusters: a run that removes clusters (UNSEEN) keeps k labels and a
  (k,) bool `active` mask. A dead cluster has no point, so every score above
  ignores it already; the few that count clusters or normalise by k take
  `active` and use the clusters alive (`k_active = sum(active)`) instead of k.
* Undefined cases give NaN, never an exception: a score sklearn rejects
  (e.g. silhouette with one cluster) is NaN; a case sklearn defines (e.g.
  silhouette 0 for a singleton cluster) gets sklearn's value. Labels outside
  0..k-1 make the score NaN rather than silently wrong.
* Everything runs in the input's float dtype (float32 normally; x64 is never
  switched on here). Data are centred before distances and dispersions,
  distances are summed from differences, and NMI/ARI are rearranged so
  float32 does not lose them to cancellation: the tests hold every score to
  1e-5 relative of scikit-learn's float64 value (NMI/ARI: or 1e-8 absolute
  when the score itself is below ~1e-3).

The one host-side step is the Hungarian matching behind `cluster_accuracy`
(scipy's `linear_sum_assignment`, reached through `jax.pure_callback`, so
it too works under jit and vmap).

Sections: helpers; label-based scores; silhouette family; dispersion
indices; cluster sizes, soft assignments, embedding; stability across
checkpoints and seeds; the two bundles that make evaluation-table rows.
"""
import functools
import inspect
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.optimize import linear_sum_assignment

Array = jax.Array

# On GPUs the default float32 matmul is TF32 (10-bit mantissa): far too coarse
# for distances. Every matmul here asks for full float32.
_FULL = lax.Precision.HIGHEST

# Non-empty clusters smaller than this fraction of the balanced size N/k count
# as "tiny" (near-empty): a collapsing clustering shows up here before the
# clusters empty out completely.
TINY_CLUSTER_FRACTION = 0.1

# Rows of the N x N distance matrix handled at once by the exact silhouette:
# memory is O(SILHOUETTE_CHUNK * N), about 70 MB per buffer at N = 70,000.
SILHOUETTE_CHUNK = 256

_STATIC = ("n_clusters", "n_classes", "n_true", "n_pred", "n_a", "n_b", "n_samples", "chunk_size",
           "normalize", "silhouette_sample_size", "tiny_fraction")


def _jit(fn):
    """jax.jit with the cluster counts, sizes and flags static (whichever of
    them `fn` takes), so shapes are static and Python `if`s on them work."""
    names = [n for n in _STATIC if n in inspect.signature(fn).parameters]
    return functools.wraps(fn)(jax.jit(fn, static_argnames=names))


# ----------------------------------------------------------------- helpers

def _one_hot(labels: Array, n: int, dtype=jnp.float32) -> Array:
    """(N, n) indicator; a label outside 0..n-1 gives an all-zero row."""
    return jax.nn.one_hot(labels, n, dtype=dtype)


def _labels_in_range(labels: Array, n: int) -> Array:
    return jnp.all((labels >= 0) & (labels < n))


@_jit
def cluster_sizes(labels: Array, n_clusters: int) -> Array:
    """(k,) int32 number of points per cluster (0 for an empty one)."""
    return jnp.sum(_one_hot(labels, n_clusters, jnp.int32), axis=0)


def _is_valid_partition(labels: Array, n_clusters: int) -> Array:
    """sklearn's domain for silhouette / CH / DB: labels in range and
    2 <= (number of non-empty clusters) <= N - 1."""
    n_present = jnp.sum(cluster_sizes(labels, n_clusters) > 0)
    return (_labels_in_range(labels, n_clusters)
            & (n_present >= 2) & (n_present <= labels.shape[0] - 1))


def _centre(z: Array) -> Array:
    """z minus its mean, twice: the second pass removes the rounding error of
    the first. Distances and dispersions are then computed on small numbers,
    which is what keeps float32 at ~1e-6 relative error."""
    z = z - jnp.mean(z, axis=0)
    return z - jnp.mean(z, axis=0)


def _centroids(z: Array, labels: Array, n_clusters: int) -> Array:
    """(k, d) cluster means; an empty cluster gets the zero vector (callers
    mask empty clusters out)."""
    members = _one_hot(labels, n_clusters, z.dtype)
    sums = jnp.matmul(members.T, z, precision=_FULL)
    return sums / jnp.maximum(jnp.sum(members, axis=0), 1)[:, None]


def _distances_to_centroids(z: Array, centroids: Array) -> Array:
    """(N, k) Euclidean distances, by direct differences (k is small)."""
    return jnp.sqrt(jnp.sum(jnp.square(z[:, None, :] - centroids[None, :, :]), axis=-1))


def _entropy(p: Array, axis=-1) -> Array:
    """Shannon entropy in nats, with 0 log 0 = 0."""
    return -jnp.sum(jax.scipy.special.xlogy(p, p), axis=axis)


# ------------------------------------------------------ label-based scores

@_jit
def contingency_matrix(labels_a: Array, labels_b: Array, n_a: int, n_b: int) -> Array:
    """(n_a, n_b) int32 counts of points with label i in `labels_a` and j in
    `labels_b`. Unlike sklearn's, rows/columns of absent labels are kept (as
    zeros) so the shape is static; points with an out-of-range label are not
    counted."""
    counts = jnp.matmul(_one_hot(labels_a, n_a).T, _one_hot(labels_b, n_b), precision=_FULL)
    return jnp.round(counts).astype(jnp.int32)  # exact: float32 counts are exact below 2**24


def _max_matched_host(contingency: np.ndarray) -> np.ndarray:
    """Hungarian step on the host for a (..., K, K) stack of contingency
    matrices: the largest number of points a one-to-one relabelling can
    make agree."""
    contingency = np.asarray(contingency)
    stack = contingency.reshape((-1,) + contingency.shape[-2:])
    matched = np.empty(len(stack), np.int32)
    for i, c in enumerate(stack):
        rows, cols = linear_sum_assignment(c, maximize=True)
        matched[i] = c[rows, cols].sum()
    return matched.reshape(contingency.shape[:-2])


def _max_matched(contingency: Array) -> Array:
    return jax.pure_callback(
        _max_matched_host, jax.ShapeDtypeStruct(contingency.shape[:-2], jnp.int32),
        contingency, vmap_method="broadcast_all")


@_jit
def cluster_accuracy(y_true: Array, y_pred: Array, n_clusters: int,
                     n_classes: Optional[int] = None) -> Array:
    """Unsupervised clustering accuracy: the fraction of points labelled
    correctly under the best one-to-one map from clusters to classes
    (Hungarian algorithm on the contingency matrix). `n_classes` defaults to
    `n_clusters`; when they differ the contingency is padded to a square of
    max(n_clusters, n_classes), so surplus clusters map to no class and count
    as errors. NaN if a label is out of range."""
    n_classes = n_clusters if n_classes is None else n_classes
    size = max(n_clusters, n_classes)
    matched = _max_matched(contingency_matrix(y_true, y_pred, size, size))
    valid = _labels_in_range(y_true, n_classes) & _labels_in_range(y_pred, n_clusters)
    acc = jnp.minimum(matched / y_true.shape[-1], 1.0)  # XLA may divide by multiplying by 1/N
    return jnp.where(valid, acc, jnp.nan).astype(jnp.float32)


@_jit
def cluster_accuracy_batched(y_true: Array, y_pred: Array, n_clusters: int,
                             n_classes: Optional[int] = None) -> Array:
    """`cluster_accuracy` over any leading axes, broadcasting y_true against
    y_pred (e.g. y_true (N,) with y_pred (seeds, epochs, N) -> (seeds,
    epochs)). One host call solves all the assignment problems."""
    acc = functools.partial(cluster_accuracy, n_clusters=n_clusters, n_classes=n_classes)
    return jnp.vectorize(acc, signature="(n),(n)->()")(y_true, y_pred)


@_jit
def normalized_mutual_info(y_true: Array, y_pred: Array, n_true: int, n_pred: int) -> Array:
    """NMI with arithmetic normalisation, I(T;P) / ((H(T) + H(P)) / 2) —
    scikit-learn's default. Special cases as in sklearn: 1.0 when both
    labelings are a single cluster; 0.0 when the mutual information is 0
    (e.g. one labeling is a single cluster and the other is not). Capped at
    1, its maximum, so float32 rounding cannot push identical labelings
    above it. Error ~1e-8 absolute. NaN if a label is out of range."""
    n = y_true.shape[-1]
    c = contingency_matrix(y_true, y_pred, n_true, n_pred).astype(jnp.float32)
    a, b = jnp.sum(c, axis=1), jnp.sum(c, axis=0)
    # MI = sum_ij (n_ij / N) log(N n_ij / (a_i b_j)). One log of the ratio
    # (not a difference of logs) keeps float32 error at ~eps per term, and is
    # exactly 0 for an independent cell.
    ratio = jnp.where(c > 0, (c * n) / (a[:, None] * b[None, :]), 1.0)
    mi = jnp.maximum(jnp.sum(c * jnp.log(ratio)) / n, 0.0)
    mean_entropy = (_entropy(a / n) + _entropy(b / n)) / 2
    both_single = (jnp.sum(a > 0) <= 1) & (jnp.sum(b > 0) <= 1)
    nmi = jnp.where(both_single, 1.0, jnp.where(mi == 0, 0.0, jnp.minimum(mi / mean_entropy, 1.0)))
    valid = _labels_in_range(y_true, n_true) & _labels_in_range(y_pred, n_pred)
    return jnp.where(valid, nmi, jnp.nan)


@_jit
def adjusted_rand_index(y_true: Array, y_pred: Array, n_true: int, n_pred: int) -> Array:
    """Hubert & Arabie's adjusted Rand index, equal to sklearn's
    adjusted_rand_score, including its special case: 1.0 when the two
    labelings are identical and trivial (both one cluster, or both all
    singletons). NaN if a label is out of range.

    The textbook form (index - expected) / (max - expected) subtracts pair
    counts of order N^2 that nearly cancel: float32 would lose the result
    and int32 overflows past N = 46,341. It is rearranged exactly into
        ARI = (N (N-1) D - P Q / N) / (P B + Q A)
    with a_i, b_j the row/column sums of the contingency n_ij, P = sum_i
    a_i (N - a_i), Q = sum_j b_j (N - b_j), A = sum_i C(a_i, 2), B = sum_j
    C(b_j, 2), and D = sum_ij n_ij^2 - e_ij^2 where e_ij = a_i b_j / N. With
    the excess x_ij = n_ij - e_ij, D = sum x^2 + (2/N) sum x_ij a_i b_j, and
    as x sums to 0 along every row and column the last sum may use centred
    sizes (a_i - mean a)(b_j - mean b): small terms, little cancellation.
    The error is ~1e-8 absolute: 1e-5 relative unless |ARI| < ~1e-3. Capped
    at 1, its maximum, against float32 rounding."""
    n = y_true.shape[-1]
    c = contingency_matrix(y_true, y_pred, n_true, n_pred).astype(jnp.float32)
    a, b = jnp.sum(c, axis=1), jnp.sum(c, axis=0)
    excess = c - a[:, None] * b[None, :] / n
    centred_sizes = (a - jnp.mean(a))[:, None] * (b - jnp.mean(b))[None, :]
    d = jnp.sum(excess * excess) + 2.0 / n * jnp.sum(excess * centred_sizes)
    p, q = jnp.sum(a * (n - a)), jnp.sum(b * (n - b))
    pairs_true, pairs_pred = jnp.sum(a * (a - 1)) / 2, jnp.sum(b * (b - 1)) / 2
    numerator = n * (n - 1.0) * d - p * q / n
    denominator = p * pairs_pred + q * pairs_true   # 0 only in the trivial identical cases
    ari = jnp.where(denominator == 0, 1.0, jnp.minimum(numerator / denominator, 1.0))
    valid = _labels_in_range(y_true, n_true) & _labels_in_range(y_pred, n_pred)
    return jnp.where(valid, ari, jnp.nan)


# ------------------------------------------------------- silhouette family

def _silhouette_of_rows(z: Array, labels: Array, n_clusters: int, rows: Array,
                        chunk_size: int) -> Array:
    """Exact silhouette s(i) = (b - a) / max(a, b) of the points `rows`
    against all N points; sklearn's conventions: 0 for a point in a singleton
    cluster, 0 when a = b = 0 (identical points).

    Distances come in blocks of `chunk_size` rows (a `lax.map`), each block
    reduced at once to per-cluster distance sums, so memory is
    O(chunk_size * N), never N x N. Squared distances are summed feature by
    feature from differences, not expanded as |x|^2 + |y|^2 - 2 x.y: that
    expansion cancels catastrophically for close points in float32 (a
    duplicate would sit ~1e-3 away instead of 0), and on CPU it is no faster."""
    z = _centre(z)
    n, d = z.shape
    members = _one_hot(labels, n_clusters, z.dtype)                 # (N, k)
    sizes = jnp.sum(members, axis=0)                                # (k,)
    features = z.T                                                  # (d, N): one row per feature
    all_rows = jnp.arange(n)

    def distance_sums(block: Array) -> Array:                       # (B,) -> (B, k)
        block_features = features[:, block]                         # (d, B)

        def add_feature(j, d2):
            return d2 + jnp.square(block_features[j][:, None] - features[j][None, :])

        d2 = lax.fori_loop(0, d, add_feature, jnp.zeros((block.shape[0], n), z.dtype), unroll=min(d, 8))
        dist = jnp.where(block[:, None] == all_rows[None, :], 0.0, jnp.sqrt(d2))  # exact 0 to itself
        return jnp.matmul(dist, members, precision=_FULL)

    n_rows = rows.shape[0]
    chunk_size = min(chunk_size, n_rows)
    n_blocks = -(-n_rows // chunk_size)
    padded = jnp.pad(rows, (0, n_blocks * chunk_size - n_rows))     # padding rows are dropped below
    sums = lax.map(distance_sums, padded.reshape(n_blocks, chunk_size))
    sums = sums.reshape(-1, n_clusters)[:n_rows]                     # (R, k)

    own = labels[rows]
    own_size = sizes[own]
    a = jnp.take_along_axis(sums, own[:, None], axis=1)[:, 0] / jnp.maximum(own_size - 1, 1)
    is_other = (jnp.arange(n_clusters)[None, :] != own[:, None]) & (sizes[None, :] > 0)
    b = jnp.min(jnp.where(is_other, sums / jnp.maximum(sizes, 1), jnp.inf), axis=1)
    largest = jnp.maximum(a, b)
    s = jnp.where(largest > 0, (b - a) / jnp.where(largest > 0, largest, 1.0), 0.0)
    return jnp.where(own_size > 1, s, 0.0)


@_jit
def silhouette_samples(z: Array, labels: Array, n_clusters: int,
                       chunk_size: int = SILHOUETTE_CHUNK) -> Array:
    """(N,) per-point silhouette, as sklearn.metrics.silhouette_samples
    (Euclidean). All NaN outside sklearn's domain (fewer than 2 or more than
    N - 1 non-empty clusters, or labels out of range)."""
    s = _silhouette_of_rows(z, labels, n_clusters, jnp.arange(z.shape[0]), chunk_size)
    return jnp.where(_is_valid_partition(labels, n_clusters), s, jnp.nan)


@_jit
def silhouette(z: Array, labels: Array, n_clusters: int,
               chunk_size: int = SILHOUETTE_CHUNK) -> Array:
    """Exact mean silhouette (Rousseeuw 1987), = sklearn's silhouette_score
    with the Euclidean metric: O(N^2 d) time, O(chunk_size * N) memory.
    Singleton clusters contribute 0; NaN with one cluster or N clusters."""
    return jnp.mean(silhouette_samples(z, labels, n_clusters, chunk_size))


@_jit
def silhouette_sampled(z: Array, labels: Array, n_clusters: int, key: Array,
                       n_samples: int, chunk_size: int = SILHOUETTE_CHUNK):
    """Unbiased estimate of the exact mean silhouette and its standard error,
    from `n_samples` points drawn without replacement, each scored against
    ALL N points: O(n_samples N d) time.

    This differs from sklearn's `silhouette_score(sample_size=...)`, which
    scores the subsample against itself (a biased estimate of a different
    quantity). The standard error includes the finite-population correction,
    so it is 0 when n_samples = N; it is NaN when n_samples = 1."""
    n = z.shape[0]
    if not 1 <= n_samples <= n:
        raise ValueError(f"n_samples={n_samples} must be in 1..N={n}")
    rows = jax.random.choice(key, n, (n_samples,), replace=False)
    s = _silhouette_of_rows(z, labels, n_clusters, rows, chunk_size)
    finite_population = jnp.sqrt((n - n_samples) / max(n - 1, 1))
    stderr = jnp.std(s, ddof=1) / jnp.sqrt(n_samples) * finite_population if n_samples > 1 else jnp.nan
    valid = _is_valid_partition(labels, n_clusters)
    return jnp.where(valid, jnp.mean(s), jnp.nan), jnp.where(valid, stderr, jnp.nan)


@_jit
def simplified_silhouette(z: Array, labels: Array, n_clusters: int) -> Array:
    """Centroid-based silhouette (Hruschka et al. 2004), O(N k d): a = distance
    to the own centroid, b = distance to the nearest other non-empty centroid,
    mean of (b - a) / max(a, b). Degenerate cases as `silhouette`: 0 for
    singleton clusters and for a = b = 0; NaN with one cluster or N clusters."""
    z = _centre(z)
    sizes = cluster_sizes(labels, n_clusters)
    dist = _distances_to_centroids(z, _centroids(z, labels, n_clusters))  # (N, k)
    a = jnp.take_along_axis(dist, labels[:, None], axis=1)[:, 0]
    is_other = (jnp.arange(n_clusters)[None, :] != labels[:, None]) & (sizes[None, :] > 0)
    b = jnp.min(jnp.where(is_other, dist, jnp.inf), axis=1)
    largest = jnp.maximum(a, b)
    s = jnp.where(largest > 0, (b - a) / jnp.where(largest > 0, largest, 1.0), 0.0)
    s = jnp.where(sizes[labels] > 1, s, 0.0)
    return jnp.where(_is_valid_partition(labels, n_clusters), jnp.mean(s), jnp.nan)


# ------------------------------------------------------ dispersion indices

@_jit
def within_cluster_dispersion(z: Array, labels: Array, n_clusters: int) -> Array:
    """W = sum_i ||z_i - c(i)||^2, the squared distances to the own centroid
    (k-means inertia; the denominator of Calinski-Harabasz). NaN if a label
    is out of range."""
    z = _centre(z)
    residual = z - _centroids(z, labels, n_clusters)[labels]
    return jnp.where(_labels_in_range(labels, n_clusters), jnp.sum(residual * residual), jnp.nan)


@_jit
def between_cluster_dispersion(z: Array, labels: Array, n_clusters: int) -> Array:
    """B = sum_k n_k ||c_k - mean||^2 (the numerator of Calinski-Harabasz);
    W + B is the total sum of squares. NaN if a label is out of range."""
    z = _centre(z)
    gaps = _centroids(z, labels, n_clusters) - jnp.mean(z, axis=0)
    sizes = cluster_sizes(labels, n_clusters)
    return jnp.where(_labels_in_range(labels, n_clusters),
                     jnp.sum(sizes * jnp.sum(gaps * gaps, axis=1)), jnp.nan)


@_jit
def calinski_harabasz(z: Array, labels: Array, n_clusters: int) -> Array:
    """Variance ratio (B / (k - 1)) / (W / (N - k)), k = number of non-empty
    clusters; = sklearn's calinski_harabasz_score. As sklearn: 1.0 when W = 0
    (every cluster is a single repeated point). NaN with one cluster or N
    clusters (sklearn raises)."""
    n = z.shape[0]
    k = jnp.sum(cluster_sizes(labels, n_clusters) > 0)
    within = within_cluster_dispersion(z, labels, n_clusters)
    between = between_cluster_dispersion(z, labels, n_clusters)
    ratio = jnp.where(within == 0, 1.0, between * (n - k) / (within * (k - 1)))
    return jnp.where(_is_valid_partition(labels, n_clusters), ratio, jnp.nan)


@_jit
def davies_bouldin(z: Array, labels: Array, n_clusters: int) -> Array:
    """Davies-Bouldin index: mean over clusters i of max_{j != i} (s_i + s_j) /
    d(c_i, c_j), s_i = mean distance of cluster i's points to its centroid;
    lower is better. = sklearn's davies_bouldin_score, including its
    conventions: 0.0 when all s_i or all centroid distances are ~0 (|x| <=
    1e-8), and a pair of coincident centroids contributes 0 (not inf). NaN
    with one cluster or N clusters (sklearn raises)."""
    z = _centre(z)
    sizes = cluster_sizes(labels, n_clusters)
    present = sizes > 0
    centroids = _centroids(z, labels, n_clusters)
    to_own = jnp.take_along_axis(_distances_to_centroids(z, centroids), labels[:, None], axis=1)[:, 0]
    spread = jnp.matmul(to_own, _one_hot(labels, n_clusters, z.dtype), precision=_FULL) / jnp.maximum(sizes, 1)
    gaps = _distances_to_centroids(centroids, centroids)             # (k, k)
    both_present = present[:, None] & present[None, :]
    pairs = both_present & ~jnp.eye(n_clusters, dtype=bool)         # the diagonal is masked, not
    counted = pairs & (gaps > 0)                                      # trusted to round to exactly 0
    ratio = jnp.where(counted, (spread[:, None] + spread[None, :]) / jnp.where(counted, gaps, 1.0), 0.0)
    index = jnp.sum(jnp.where(present, jnp.max(ratio, axis=1), 0.0)) / jnp.sum(present)
    all_tight = jnp.all(jnp.where(present, jnp.abs(spread) <= 1e-8, True))
    all_coincident = jnp.all(jnp.where(pairs, gaps <= 1e-8, True))
    index = jnp.where(all_tight | all_coincident, 0.0, index)
    return jnp.where(_is_valid_partition(labels, n_clusters), index, jnp.nan)


# ------------------------------------ cluster sizes, soft assignments, embedding

def _n_active(n_clusters: int, active: Optional[Array]):
    """The number of clusters alive: k without a mask."""
    return n_clusters if active is None else jnp.sum(active)


@_jit
def cluster_size_entropy(labels: Array, n_clusters: int, normalize: bool = False,
                         active: Optional[Array] = None) -> Array:
    """Entropy (nats) of the cluster-size distribution n_k / N; with
    `normalize`, divided by log k (k: the clusters `active`, all without a
    mask) so 1 = perfectly balanced and 0 = one cluster (NaN for k = 1). NaN
    if a label is out of range."""
    h = _entropy(cluster_sizes(labels, n_clusters) / labels.shape[0])
    if normalize:
        k = _n_active(n_clusters, active)
        h = jnp.where(k > 1, h / jnp.log(jnp.maximum(k, 2)), jnp.nan)
    return jnp.where(_labels_in_range(labels, n_clusters), h, jnp.nan)


@_jit
def count_empty_clusters(labels: Array, n_clusters: int, active: Optional[Array] = None) -> Array:
    """Number of clusters with no point, among the `active` ones (a dead
    cluster is not an empty one). Float, so that out-of-range labels can give NaN."""
    empty = cluster_sizes(labels, n_clusters) == 0
    if active is not None:
        empty = empty & active
    return jnp.where(_labels_in_range(labels, n_clusters), jnp.sum(empty).astype(jnp.float32), jnp.nan)


@_jit
def count_tiny_clusters(labels: Array, n_clusters: int,
                        tiny_fraction: float = TINY_CLUSTER_FRACTION, active: Optional[Array] = None) -> Array:
    """Number of non-empty clusters with fewer than tiny_fraction * N / k
    points (default 10% of the balanced size; k: the clusters `active`);
    empty clusters are counted by `count_empty_clusters`, not here. Float;
    NaN if a label is out of range."""
    sizes = cluster_sizes(labels, n_clusters)
    threshold = tiny_fraction * labels.shape[0] / _n_active(n_clusters, active)
    tiny = jnp.sum((sizes > 0) & (sizes < threshold)).astype(jnp.float32)
    return jnp.where(_labels_in_range(labels, n_clusters), tiny, jnp.nan)


@jax.jit
def mean_max_probability(probs: Array) -> Array:
    """Mean over points of max_k p_ik: 1/k for uniform, 1 for one-hot rows."""
    return jnp.mean(jnp.max(probs, axis=-1))


@_jit
def mean_assignment_entropy(probs: Array, normalize: bool = False, active: Optional[Array] = None) -> Array:
    """Mean over points of the entropy (nats) of the soft assignment; with
    `normalize`, divided by log k, k the clusters `active` (all columns
    without a mask): 0 = one-hot, 1 = uniform over the clusters alive."""
    h = jnp.mean(_entropy(probs))
    if not normalize:
        return h
    k = _n_active(probs.shape[-1], active)
    return jnp.where(k > 1, h / jnp.log(jnp.maximum(k, 2)), jnp.nan)


@jax.jit
def effective_rank(z: Array) -> Array:
    """Roy & Vetterli (2007) effective rank exp(H(p)), p = singular values of z
    divided by their sum: 1 for rank one, d for d equal singular values. Of z
    as given (no centring, as in RankMe); centre z first to measure spread
    around the mean. NaN for an all-zero z. `full_matrices=False`: the full
    SVD asks XLA for an N x N buffer (39 GB at N = 70,000) even without U."""
    s = jnp.linalg.svd(z, full_matrices=False, compute_uv=False)
    return jnp.exp(_entropy(s / jnp.sum(s)))


@jax.jit
def reconstruction_mse(x: Array, x_rec: Array) -> Array:
    """Mean squared error over all elements (torch.nn.MSELoss's default)."""
    return jnp.mean(jnp.square(x - x_rec))


# ------------------------------------- stability across checkpoints and seeds

def _changed_fraction(labels_before: Array, labels_after: Array, n_clusters: int) -> Array:
    """(N - matched) / N: written so that no change is exactly 0.0."""
    n = labels_before.shape[-1]
    matched = _max_matched(contingency_matrix(labels_before, labels_after, n_clusters, n_clusters))
    valid = _labels_in_range(labels_before, n_clusters) & _labels_in_range(labels_after, n_clusters)
    return jnp.where(valid, (n - matched) / n, jnp.nan).astype(jnp.float32)


@_jit
def assignment_stability(labels_before: Array, labels_after: Array, n_clusters: int) -> dict:
    """How much the assignment moved between two checkpoints:
    `ari_vs_previous`, `nmi_vs_previous`, and `changed_fraction`, the fraction
    of points that changed cluster AFTER optimally matching the two label
    sets (Hungarian), i.e. 1 - cluster_accuracy(before, after). Matching
    first makes it permutation-invariant: relabelling alone changes nothing."""
    return {
        "ari_vs_previous": adjusted_rand_index(labels_before, labels_after, n_clusters, n_clusters),
        "nmi_vs_previous": normalized_mutual_info(labels_before, labels_after, n_clusters, n_clusters),
        "changed_fraction": _changed_fraction(labels_before, labels_after, n_clusters),
    }


@_jit
def consecutive_stability(labels_by_epoch: Array, n_clusters: int) -> dict:
    """`assignment_stability` of every consecutive pair of a (T, N) array of
    assignments: a dict of (T - 1,) arrays, entry t comparing epochs t and
    t + 1."""
    return jax.vmap(assignment_stability, in_axes=(0, 0, None))(
        labels_by_epoch[:-1], labels_by_epoch[1:], n_clusters)


@_jit
def seed_agreement(labels_by_seed: Array, n_clusters: int) -> dict:
    """Mean pairwise ARI and NMI over all S(S-1)/2 pairs of a (S, N) array of
    assignments (one row per seed, same epoch). NaN for S = 1."""
    first, second = np.triu_indices(labels_by_seed.shape[0], k=1)
    if len(first) == 0:
        return {"mean_pairwise_ari": jnp.float32(jnp.nan), "mean_pairwise_nmi": jnp.float32(jnp.nan)}
    x, y = labels_by_seed[first], labels_by_seed[second]
    ari = jax.vmap(adjusted_rand_index, in_axes=(0, 0, None, None))(x, y, n_clusters, n_clusters)
    nmi = jax.vmap(normalized_mutual_info, in_axes=(0, 0, None, None))(x, y, n_clusters, n_clusters)
    return {"mean_pairwise_ari": jnp.mean(ari), "mean_pairwise_nmi": jnp.mean(nmi)}


# --------------------------------------------------------------- bundles

@_jit
def label_based_scores(y_true: Array, y_pred: Array, n_clusters: int,
                       n_classes: Optional[int] = None) -> dict:
    """Evaluation-only scores against ground truth: {'acc', 'nmi', 'ari'}.
    `n_classes` defaults to `n_clusters`."""
    n_classes = n_clusters if n_classes is None else n_classes
    return {
        "acc": cluster_accuracy(y_true, y_pred, n_clusters, n_classes),
        "nmi": normalized_mutual_info(y_true, y_pred, n_classes, n_clusters),
        "ari": adjusted_rand_index(y_true, y_pred, n_classes, n_clusters),
    }


@_jit
def label_free_scores(z: Array, labels: Array, n_clusters: int, probs: Optional[Array] = None,
                      x: Optional[Array] = None, x_rec: Optional[Array] = None, *,
                      silhouette_sample_size: Optional[int] = None, key: Optional[Array] = None,
                      chunk_size: int = SILHOUETTE_CHUNK,
                      tiny_fraction: float = TINY_CLUSTER_FRACTION, active: Optional[Array] = None) -> dict:
    """Every score that needs no ground truth, for one checkpoint; the keys are
    the evaluation table's columns and are always all present (NaN where an
    input is missing: `probs` for the soft-assignment scores, `x` and `x_rec`
    for the reconstruction error). `active`: the (k,) mask of clusters alive,
    for a run that removes clusters (see the module's conventions).

    The silhouette is exact unless `silhouette_sample_size` is given; then it
    is `silhouette_sampled` with that many points and `key`, and
    `silhouette_se` is its standard error (0 for the exact one)."""
    if silhouette_sample_size is None:
        sil, sil_se = silhouette(z, labels, n_clusters, chunk_size), jnp.float32(0.0)
    else:
        if key is None:
            raise ValueError("silhouette_sample_size needs a PRNG key")
        sil, sil_se = silhouette_sampled(z, labels, n_clusters, key, silhouette_sample_size, chunk_size)
    nan = jnp.float32(jnp.nan)
    return {
        "silhouette": sil,
        "silhouette_se": sil_se,
        "simplified_silhouette": simplified_silhouette(z, labels, n_clusters),
        "calinski_harabasz": calinski_harabasz(z, labels, n_clusters),
        "davies_bouldin": davies_bouldin(z, labels, n_clusters),
        "within_dispersion": within_cluster_dispersion(z, labels, n_clusters),
        "between_dispersion": between_cluster_dispersion(z, labels, n_clusters),
        "size_entropy": cluster_size_entropy(labels, n_clusters, normalize=True, active=active),
        "n_empty_clusters": count_empty_clusters(labels, n_clusters, active),
        "n_tiny_clusters": count_tiny_clusters(labels, n_clusters, tiny_fraction, active),
        "mean_max_prob": nan if probs is None else mean_max_probability(probs),
        "mean_assignment_entropy": nan if probs is None else mean_assignment_entropy(probs, normalize=True,
                                                                                      active=active),
        "effective_rank": effective_rank(z),
        "reconstruction_mse": nan if x is None or x_rec is None else reconstruction_mse(x, x_rec),
    }
