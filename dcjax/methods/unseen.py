"""UNSEEN (Leiber et al., 2024, arXiv 2410.09491): deep clustering when the
number of clusters is unknown, by letting clusters die.

UNSEEN is not an algorithm of its own but a wrapper around a center-based one
(here DCN, DEC or DKM, as in the paper). `make_unseen(base, config)` returns
the base `Method` with three changes, and the one training loop runs it as it
runs any method:

1. Start from an upper bound: the loop's k-means runs with `k_init` clusters
   (35 in the paper); C⁰, the reference size of each cluster, starts as the
   k-means cluster sizes.
2. One more loss term, every mini-batch, while more than 2 clusters are
   active (`nearest_neighbour_loss`): the mean squared distance of each
   embedded point to its l = max(1, |B| // k_active) nearest neighbours in the
   batch. It pulls neighbours together, so that small clusters merge into
   bigger ones. For DEC and DKM, whose centers learn with the network, it is
   divided by the batch's mean pairwise squared distance, so the embedding
   cannot shrink to make it small. Its weight is the base method's
   clustering weight (λ/2 for DCN, whose k-means loss has λ/2).
3. An end-of-epoch rule (`end_epoch`): a cluster dies when its size over the
   whole data set (DCN: its running labels) falls below t · C⁰ (t = 0.5).
   A dead cluster is masked out (`active`), never resized: its center stays
   in the arrays but is never nearest, has probability 0 and no gradient.
   The points that C⁰ counted in a dead cluster are counted, from then on,
   in the surviving cluster nearest to them; C⁰ is otherwise never reset.

The per-seed state UNSEEN adds lives in `extras['unseen']`:
`reference_labels` (N,), the assignment whose cluster sizes are C⁰ (so C⁰ is
always `bincount(reference_labels)`, which is how the reference code checks
its own bookkeeping). The number of active clusters is a state the loop keeps
for every method (`state['active']`), so snapshots, records, evaluation and
selection see it whatever the method.

The public code (GitHub collinleiber/UNSEEN) differs from the paper in two
places. `unseen.reference_code=True` does what that code does, to measure
whether the published numbers depend on it:
- DEC and DKM: at the first removal the code replaces its center tensor by a
  new one that it never gives to the optimiser, so the centers stop learning
  for the rest of training. Here: the centers are frozen at their values of
  that epoch (`after_step` puts them back after every step).
- DCN: the code removes dead centers but not their per-cluster counts, so
  after a removal the j-th surviving center (in index order) updates with the
  count stored at position j of the unpruned list (`unpruned_counts`).
"""
import jax
import jax.numpy as jnp

from dcjax.config import UNSEEN_BASES as SUPPORTED
from dcjax.methods.base import EpochEnd, LossInputs, Method, nearest_center, squared_distances


def nearest_neighbour_loss(z, n_active, normalise: bool):
    """UNSEEN's loss on a batch z (B, e): the mean, over points and their l
    nearest neighbours in the batch (the point itself excluded), of the
    squared distance, l = max(1, B // n_active). `normalise` divides it by
    the mean squared distance of all B(B-1) pairs.

    l changes with n_active under jit, so each row's B // 3 nearest are taken
    (`lax.top_k`, static) and a mask keeps the first l: the loss is only used
    while more than 2 clusters are active, so l ≤ B // 3 (for n_active ≤ 2, l
    is capped there). A full sort of the rows gives the same numbers but costs
    ~45x more on CPU (XLA's generic sort): 105 ms against 2.3 ms per USPS
    batch of 256, forward and backward, on this 2-core machine."""
    b = z.shape[0]
    d2 = squared_distances(z, z)
    itself = jnp.eye(b, dtype=bool)
    most = max(1, b // 3)
    nearest_first = -jax.lax.top_k(-jnp.where(itself, jnp.inf, d2), most)[0]   # (B, B // 3), itself never
    l = jnp.clip(b // n_active, 1, most)
    loss = jnp.sum(jnp.where(jnp.arange(most)[None, :] < l, nearest_first, 0.0)) / (b * l)
    if normalise:
        mean_pair = jnp.sum(jnp.where(itself, 0.0, d2)) / (b * (b - 1))
        loss = loss / jnp.maximum(mean_pair, 1e-12)
    return loss


def dying(sizes, reference_sizes, active, t: float):
    """Active clusters whose size fell below t times their reference size C⁰."""
    ratio = sizes / jnp.where(reference_sizes > 0, reference_sizes, 1)
    return active & (ratio < t)


def unpruned_counts(counts, before, after):
    """DCN's counts as the reference code ends up reading them after a
    removal. It keeps one count per position in a list that is never pruned,
    while the centers are: the j-th surviving center then reads position j,
    which held the count of the j-th center active before the removal."""
    listed = counts[jnp.argsort(jnp.where(before, 0, 1), stable=True)]   # active ones first, in index order
    rank_after = jnp.cumsum(after) - 1
    return jnp.where(after, listed[jnp.maximum(rank_after, 0)], counts)


def nearest_neighbour_weight(config) -> float:
    """The weight of the extra loss: the base method's clustering weight, as
    the reference code has it (DCN's k-means loss carries λ/2, so does this)."""
    if config.algorithm == "dcn":
        return 0.5 * float(config.dcn.lambda_clust)
    if config.algorithm == "dkm":
        return float(config.dkm.lambda_clust)
    return 1.0   # DEC: its KL divergence has weight 1


def check(config, n_samples: int | None = None):
    """Refuse a setting UNSEEN cannot run, before anything is computed."""
    cfg = config.unseen
    if config.algorithm not in SUPPORTED:
        raise ValueError(f"UNSEEN works with {', '.join(SUPPORTED)} (the paper's base algorithms), "
                         f"not {config.algorithm!r}")
    k_init, t = int(cfg.k_init), float(cfg.t)
    if k_init < 2:
        raise ValueError(f"unseen.k_init must be at least 2, got {k_init}")
    if n_samples is not None and k_init > n_samples:
        raise ValueError(f"unseen.k_init={k_init} is more than the {n_samples} samples")
    if not 0.0 < t < 1.0:
        raise ValueError(f"unseen.t (the dying threshold) must be in (0, 1), got {t}")


def make_unseen(base: Method, config) -> Method:
    """`base` (DCN, DEC or DKM) with UNSEEN's loss term and end-of-epoch rule."""
    check(config)
    cfg = config.unseen
    t = float(cfg.t)
    with_loss = bool(cfg.nn_loss)
    weight = nearest_neighbour_weight(config)
    reference_code = bool(cfg.reference_code)
    freezes_centers = reference_code and base.learn_centers
    has_running_labels = base.name == "dcn"   # DCN's labels, updated batch by batch, are its assignment

    def init(z_full, centers, labels):
        own = {"reference_labels": labels.astype(jnp.int32)}
        if freezes_centers:
            own |= {"frozen": jnp.zeros((), bool), "frozen_centers": centers}
        return {**base.init(z_full, centers, labels), "unseen": own}

    def loss(inp: LossInputs):
        total, parts = base.loss(inp)
        if not with_loss:
            return total, parts
        k = inp.centers.shape[0]
        n_active = k if inp.active is None else jnp.sum(inp.active)
        nn = jnp.where(n_active > 2, nearest_neighbour_loss(inp.z, n_active, normalise=base.learn_centers), 0.0)
        total = total + weight * nn
        return total, {**parts, "total": total, "nearest_neighbour": nn}

    def after_step(extras, centers, z_batch, batch_idx, active=None):
        extras, centers = base.after_step(extras, centers, z_batch, batch_idx, active)
        own = extras["unseen"]
        return extras, jnp.where(own["frozen"], own["frozen_centers"], centers)

    def end_epoch(inp: EpochEnd):
        extras, own = dict(inp.extras), dict(inp.extras["unseen"])
        k = inp.centers.shape[0]
        current = extras["labels"] if has_running_labels else nearest_center(inp.z, inp.centers, inp.active)
        reference = own["reference_labels"]
        dead = dying(jnp.bincount(current, length=k), jnp.bincount(reference, length=k), inp.active, t)
        active = inp.active & ~dead
        removed = jnp.any(dead)
        nearest_survivor = nearest_center(inp.z, inp.centers, active)
        own["reference_labels"] = jnp.where(dead[reference], nearest_survivor, reference)
        if has_running_labels:   # as the reference code: after a removal, every point is assigned anew
            extras["labels"] = jnp.where(removed, nearest_survivor, extras["labels"])
            if reference_code:
                extras["counts"] = jnp.where(removed, unpruned_counts(extras["counts"], inp.active, active),
                                             extras["counts"])
        if freezes_centers:
            first = removed & ~own["frozen"]
            own["frozen_centers"] = jnp.where(first, inp.centers, own["frozen_centers"])
            own["frozen"] = own["frozen"] | removed
        extras["unseen"] = own
        return extras, inp.centers, active

    return base._replace(
        name=f"unseen_{base.name}", init=init, loss=loss, end_epoch=end_epoch,
        loss_names=base.loss_names + (("nearest_neighbour",) if with_loss else ()),
        after_step=after_step if freezes_centers else base.after_step)
