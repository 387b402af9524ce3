"""DECCS (Miklautz et al., "Deep Clustering With Consensus Representations", ICDM 2022).

DECCS learns an embedding on which different clustering algorithms agree.
Each round:

1. Sample 50% of the data (8% when N > 11,000) and standardise its embedding.
2. Cluster the sample with each ensemble member (scikit-learn: k-means with 10
   starts, spectral clustering on a 10-nearest-neighbour graph, Ward
   agglomerative, a full-covariance GMM with 10 starts). Rows in a cluster of
   5 points or fewer, in any member, leave the round.
3. Weight member i by its mean NMI with the other members; the agreement is
   the mean weight (the mean pairwise NMI).
4. Fit one linear classifier per member (logistic regression, i.e. cross-
   entropy) on half of the sample; it acts on the unstandardised embedding.
5. Update the autoencoder and the classifiers together with
   [Σ w_i·CE_i + ramp·Σ w_i·pull_i] / M + (1 − agreement)·reconstruction,
   where pull_i pulls each point towards its cluster's mean, weighted by the
   classifier's probability of that cluster, the means being an exponential
   moving average over batches. SGD with momentum 0.9; the learning rate
   decays by 0.9 per round.

It stops when the agreement has not gained more than 0.001 for 3 rounds. Its
partitions are the classifiers' predictions on the full data: one per member,
and a consensus, the member that agrees most with the others.

How it fits the one training loop (dcjax/train.py): a round is a clustering
epoch. An epoch's steps are step 5 of the previous round (`batches` draws
`steps_per_round` batches from its labelled half of the sample; `loss`;
`after_step` keeps the means), and the loop's end-of-epoch rule (`end_epoch`)
does steps 1-4 on the updated embedding: the sample is drawn in JAX, the
scikit-learn ensemble and the classifiers run on the host through
`jax.pure_callback`, as the loop's k-means initialisation does. So epoch e's
snapshot holds the embedding after e-1 updates together with the members,
the agreement and the weights of the round that clustered it (`partition`);
its `assignments` are the consensus. Epoch 1 has nothing to train on yet
(`updates` is False): its round clusters the pretrained embedding. The
classifiers are the method's `centers` (trainable, `init_centers`); the
round's sample, labels and means live in `extras`. The epoch count is
static, so once stopped the remaining epochs change nothing and the host
skips its work. Everything a round needs is in the state, so a run killed
between rounds resumes to the same result. Clustering epoch 0 is, as for
every method, k-means on the pretrained embedding (AE+k-means).

Where this differs from the original code (and why): the classifiers are
fitted to convergence by scikit-learn's logistic regression (weak L2,
`classifier_c`) instead of 20,000 SGD iterations with early stopping on the
other half of the sample; a round's representation update is a fixed
`steps_per_round` steps (static shapes) instead of up to 20,000 with early
stopping; the means are updated after each step from the batch's new
embedding (the loop's `after_step`) instead of from the one before it; the
momentum buffer carries over between rounds instead of starting afresh;
the learning rate decays per epoch, so the first update (epoch 2) runs at
0.9 x 1e-3; the unlabelled rest of the data takes no part in the update; and
the ramp of the mean-pull term is exp(-5(1 - r/R)²) over R =
`mean_rampup_rounds` rounds (the original's formula reaches its full weight
at round 6).
"""
import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from dcjax.methods.base import EpochEnd, LossInputs, Method, mse, nearest_center, no_epoch_update

MEMBERS = ("kmeans", "spectral", "ward", "gmm")
UNLABELLED = -1          # a row outside the round's labelled sample, or dropped from it
ABSENT_LOGIT = -1e9      # a class a member does not have this round can never be predicted


# --------------------------------------------------------------- the host side

def ensemble(n_clusters: int, seed: int) -> dict:
    """The heterogeneous ensemble, as the original's 'DIVERSE' setting."""
    return {
        "kmeans": KMeans(n_clusters=n_clusters, n_init=10, random_state=seed),
        "spectral": SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors", n_neighbors=10,
                                       assign_labels="kmeans", n_init=10, random_state=seed),
        "ward": AgglomerativeClustering(n_clusters=n_clusters, linkage="ward"),
        "gmm": GaussianMixture(n_components=n_clusters, covariance_type="full", n_init=10, reg_covar=1e-5,
                               random_state=seed),
    }


def cluster_with_members(z: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """(M, m) labels of each member on the standardised `z`."""
    z = StandardScaler().fit_transform(np.asarray(z, np.float64))
    return np.stack([member.fit_predict(z) for member in ensemble(n_clusters, seed).values()]).astype(np.int32)


def drop_tiny_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    """`labels` with UNLABELLED for rows in a cluster of `min_size` rows or
    fewer in any member. Repeated until none is left: dropping rows can make
    another member's cluster tiny."""
    labels = labels.copy()
    while True:
        tiny = np.zeros(labels.shape[1], bool)
        for row in labels:
            ids, counts = np.unique(row[row != UNLABELLED], return_counts=True)
            tiny |= np.isin(row, ids[counts <= min_size])
        if not tiny.any():
            return labels
        labels[:, tiny] = UNLABELLED


def member_weights(labels: np.ndarray) -> np.ndarray:
    """w_i: the mean NMI (scikit-learn's) of member i with each other member,
    on the rows every member kept."""
    kept = labels[:, (labels != UNLABELLED).all(axis=0)]
    m = len(kept)
    nmi = np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            nmi[i, j] = nmi[j, i] = normalized_mutual_info_score(kept[i], kept[j])
    return (nmi.sum(axis=1) - 1.0) / (m - 1)


def fit_classifiers(z: np.ndarray, labels: np.ndarray, n_clusters: int, c: float):
    """One multinomial logistic regression per member on (z, labels[i]), rows
    with a label only. Returns weights (M, e, k), bias (M, k) and which of the
    k classes each member has (M, k); an absent class gets no weights.

    Fitted on the standardised z, then written for the raw z: the L2 penalty
    then means the same at any scale of the embedding (on a barely trained
    autoencoder's tiny embedding it would otherwise flatten every classifier
    to its largest class)."""
    m, e = len(labels), z.shape[1]
    scaler = StandardScaler().fit(np.asarray(z, np.float64))
    scaled = scaler.transform(np.asarray(z, np.float64))
    weights = np.zeros((m, e, n_clusters), np.float32)
    bias = np.zeros((m, n_clusters), np.float32)
    present = np.zeros((m, n_clusters), bool)
    for i, y in enumerate(labels):
        rows = y != UNLABELLED
        classes = np.unique(y[rows])
        present[i, classes] = True
        if len(classes) < 2:    # nothing to tell apart: the one class wins everywhere
            continue
        clf = LogisticRegression(C=c, max_iter=1000).fit(scaled[rows], y[rows])
        coef, intercept = clf.coef_, clf.intercept_
        if len(classes) == 2:   # scikit-learn keeps one row for two classes: logit(b) - logit(a)
            coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        coef = coef / scaler.scale_                        # (z - mean) / scale @ coef.T  ->  z @ W + b
        weights[i][:, classes] = coef.T
        bias[i, classes] = intercept - coef @ scaler.mean_
    return weights, bias, present


def host_round(z_sample, seed, run, *, n_clusters: int, n_train: int, min_cluster_size: int, c: float):
    """Steps 2-4 of a round on the host. The first `n_train` rows of the
    (randomly ordered) sample train the classifiers. When `run` is False (the
    method has stopped) nothing is computed and zeros come back."""
    z_sample = np.asarray(z_sample)
    m, e, k = len(MEMBERS), z_sample.shape[1], n_clusters
    if not bool(run):
        return (np.full((m, len(z_sample)), UNLABELLED, np.int32), np.zeros(m, np.float32),
                np.zeros((m, e, k), np.float32), np.zeros((m, k), np.float32), np.zeros((m, k), bool))
    # One BLAS thread: the problems are small, and BLAS threads spinning against
    # XLA's and other processes' cost 20x (a 10-start GMM on 200x10 points:
    # 15 s with the default threads, 0.7 s with one, on the shared 2-core machine).
    with threadpoolctl.threadpool_limits(1):
        labels = drop_tiny_clusters(cluster_with_members(z_sample, k, int(seed)), min_cluster_size)
        weights = member_weights(labels).astype(np.float32)
        coef, bias, present = fit_classifiers(z_sample[:n_train], labels[:, :n_train], k, c)
    return labels, weights, coef, bias, present


# ------------------------------------------------------------ the JAX side

def sample_size(n: int, cfg) -> int:
    fraction = cfg.large_sample_fraction if n > int(cfg.large_n) else cfg.sample_fraction
    return max(int(fraction * n), 2)


def classifier_logits(centers, present, z):
    """(M, B, k) logits of every member's linear classifier."""
    logits = jnp.einsum("be,mek->mbk", z, centers["weights"]) + centers["bias"][:, None, :]
    return jnp.where(present[:, None, :], logits, ABSENT_LOGIT)


def mean_pull_ramp(round_index, cfg):
    """The mean-pull weight of a round: a sigmoid-shaped ramp up to `mean_weight`."""
    rounds = max(int(cfg.mean_rampup_rounds), 1)
    t = jnp.clip(round_index.astype(jnp.float32) / rounds, 0.0, 1.0)
    return float(cfg.mean_weight) * jnp.exp(-5.0 * (1.0 - t) ** 2)


def make_deccs(config) -> Method:
    cfg = config.deccs
    n_members = len(MEMBERS)
    steps, batch_size = int(cfg.steps_per_round), int(config.batch_size)
    patience, min_gain = int(cfg.patience), float(cfg.min_gain)

    def init_centers(z_full, kmeans_centers, kmeans_labels):
        k, e = kmeans_centers.shape
        return {"weights": jnp.zeros((n_members, e, k), jnp.float32),
                "bias": jnp.zeros((n_members, k), jnp.float32)}

    def init(z_full, kmeans_centers, kmeans_labels):
        (n, e), k = z_full.shape, kmeans_centers.shape[0]
        m = sample_size(n, cfg)
        return {
            "kmeans_centers": kmeans_centers,                 # epoch 0's partition, as every method's
            "sample_rows": jnp.arange(m, dtype=jnp.int32),   # the round's sample, in random order
            "sample_labels": jnp.full((n_members, m), UNLABELLED, jnp.int32),
            "train_labels": jnp.full((n_members, n), UNLABELLED, jnp.int32),  # the labelled half, by row
            "present": jnp.zeros((n_members, k), bool),
            "weights": jnp.zeros((n_members,), jnp.float32),
            "agreement": jnp.zeros((), jnp.float32),
            "means": jnp.zeros((n_members, k, e), jnp.float32),
            "rounds": jnp.zeros((), jnp.int32),               # rounds with an ensemble so far
            "best_agreement": jnp.full((), -jnp.inf, jnp.float32),
            "stale_rounds": jnp.zeros((), jnp.int32),
            "stopped": jnp.zeros((), bool),                   # no more rounds after this
            "updating": jnp.zeros((), bool),                  # the next epoch updates the representation
        }

    def end_epoch(inp: EpochEnd):
        """A round (steps 1-4) on the embedding the epoch's updates left."""
        extras, centers, z_full = inp.extras, inp.centers, inp.z
        n = z_full.shape[0]
        m, k = extras["sample_rows"].shape[0], extras["present"].shape[1]
        n_train = m // 2
        sample_key, seed_key = jax.random.split(inp.key)
        rows = jax.random.permutation(sample_key, n)[:m].astype(jnp.int32)
        seed = jax.random.randint(seed_key, (), 0, 2 ** 31 - 1)
        run = ~extras["stopped"]
        shapes = (jax.ShapeDtypeStruct((n_members, m), jnp.int32),
                  jax.ShapeDtypeStruct((n_members,), jnp.float32),
                  jax.ShapeDtypeStruct(centers["weights"].shape, jnp.float32),
                  jax.ShapeDtypeStruct(centers["bias"].shape, jnp.float32),
                  jax.ShapeDtypeStruct((n_members, k), bool))
        labels, weights, coef, bias, present = jax.pure_callback(
            lambda zs, s, r: host_round(zs, s, r, n_clusters=k, n_train=n_train,
                                        min_cluster_size=int(cfg.min_cluster_size), c=float(cfg.classifier_c)),
            shapes, z_full[rows], seed, run, vmap_method="sequential")

        agreement = jnp.mean(weights)
        gained = agreement > extras["best_agreement"] + min_gain
        stale = jnp.where(gained, 0, extras["stale_rounds"] + 1)
        stopping = stale >= patience      # this round's classifiers are the last; no more updates
        train_rows = rows[:n_train]
        train_labels = jnp.full_like(extras["train_labels"], UNLABELLED).at[:, train_rows].set(labels[:, :n_train])
        one_hot = jax.nn.one_hot(labels[:, :n_train], k)                                    # (M, T, k); none for -1
        sums = jnp.einsum("mtk,te->mke", one_hot, z_full[train_rows])
        counts = one_hot.sum(axis=1)[..., None]
        new = {**extras, "sample_rows": rows, "sample_labels": labels, "train_labels": train_labels,
               "present": present, "weights": weights, "agreement": agreement,
               "means": sums / jnp.maximum(counts, 1.0), "rounds": extras["rounds"] + 1,
               "best_agreement": jnp.maximum(extras["best_agreement"], agreement), "stale_rounds": stale,
               "stopped": stopping, "updating": ~stopping}
        extras = jax.tree.map(lambda a, b: jnp.where(run, a, b), new, extras)
        centers = jax.tree.map(lambda a, b: jnp.where(run, a, b), {"weights": coef, "bias": bias}, centers)
        return extras, centers, inp.active

    def batches(extras, key):
        """`steps` batches from the labelled half of the sample: consecutive
        random passes over it, as the original's epochs over that half."""
        train_rows = extras["sample_rows"][: extras["sample_rows"].shape[0] // 2]
        t = train_rows.shape[0]
        passes = -(-steps * batch_size // t)
        order = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), t))(jnp.arange(passes))
        return train_rows[order.reshape(-1)[: steps * batch_size]].reshape(steps, batch_size)

    def loss(inp: LossInputs):
        ex = inp.extras
        labels = ex["train_labels"][:, inp.batch_idx]                          # (M, B)
        valid = (labels[0] != UNLABELLED).astype(jnp.float32)                # one mask for all members
        n_valid = jnp.maximum(valid.sum(), 1.0)
        safe = jnp.maximum(labels, 0)
        log_p = jax.nn.log_softmax(classifier_logits(inp.centers, ex["present"], inp.z), axis=-1)
        log_p_label = jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]   # (M, B)
        ce = -(log_p_label * valid).sum(axis=1) / n_valid                          # (M,)
        means = jnp.take_along_axis(ex["means"], safe[..., None], axis=1)          # (M, B, e)
        distance = jnp.sum(jnp.square(inp.z[None] - means), axis=-1)               # (M, B)
        confidence = jax.lax.stop_gradient(jnp.exp(log_p_label))
        pull = (distance * confidence * valid).sum(axis=1) / n_valid               # (M,)
        w = jnp.where(ex["weights"] > float(cfg.min_weight), ex["weights"], 0.0)
        classification = jnp.sum(w * ce) / n_members
        mean_pull = mean_pull_ramp(ex["rounds"] - 1, cfg) * jnp.sum(w * pull) / n_members
        rec = mse(inp.x, inp.x_rec)
        total = classification + mean_pull + (1.0 - ex["agreement"]) * rec
        return total, {"total": total, "classification": classification, "mean_pull": mean_pull,
                       "reconstruction": rec}

    def after_step(extras, centers, z_batch, batch_idx, active=None):
        """The means' moving average (weight 0.5, as the original) over the batch's rows."""
        labels = extras["train_labels"][:, batch_idx]
        one_hot = jax.nn.one_hot(labels, extras["means"].shape[1])            # (M, B, k); none for -1
        counts = one_hot.sum(axis=1)[..., None]
        batch_means = jnp.einsum("mbk,be->mke", one_hot, z_batch) / jnp.maximum(counts, 1.0)
        means = jnp.where(counts > 0, 0.5 * extras["means"] + 0.5 * batch_means, extras["means"])
        return {**extras, "means": means}, centers

    def partition(centers, extras, z_full):
        members = jnp.argmax(classifier_logits(centers, extras["present"], z_full), axis=-1).astype(jnp.int32)
        started = extras["rounds"] > 0
        consensus = jnp.argmax(extras["weights"])
        kmeans = nearest_center(z_full, extras["kmeans_centers"])
        return {"assignments": jnp.where(started, members[consensus], kmeans),
                "member_assignments": jnp.where(started, members, UNLABELLED),
                "member_weights": extras["weights"], "agreement": extras["agreement"],
                "consensus_member": consensus.astype(jnp.int32), "rounds": extras["rounds"],
                "stopped": extras["stopped"]}

    return Method(name="deccs", learn_centers=True, uses_decoder=True,
                  loss_names=("total", "classification", "mean_pull", "reconstruction"),
                  init=init, loss=loss, begin_epoch=no_epoch_update, after_step=after_step,
                  end_epoch=end_epoch, init_centers=init_centers, partition=partition, batches=batches,
                  updates=lambda extras: extras["updating"])
