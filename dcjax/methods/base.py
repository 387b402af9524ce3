"""What an algorithm contributes to the one shared training loop.

Every deep-clustering method here is an autoencoder plus cluster centers. The
loop in `dcjax.train` owns data, batching, optimiser and checkpoints; a method
only says how to start (`init`), what to minimise (`loss`), how to move the
centers outside of the gradient (`after_step`), what to refresh once per epoch
(`begin_epoch`), what to decide once an epoch is over (`end_epoch`) and how to
assign points (`assign`, `soft_assign`). A method whose clusters are not k
centers says how to start and read them (`init_centers`, `partition`), and
may choose its own batches and skip updates (`batches`, `updates`): DECCS does.

All functions are pure and act on ONE seed: the loop maps them over seeds (vmap or lax.map).
`extras` is the method's own per-seed state (e.g. DCN's counts and labels); a
function that returns it keeps the keys it does not own (a wrapper such as
UNSEEN stores its own state there too).

Active clusters. Shapes are static under jit, so a method that removes
clusters (UNSEEN, `dcjax.methods.unseen`) keeps all k centers and a (k,) bool
`active` mask in the training state. A center that is not active is never the
nearest one, gets probability 0 in every soft assignment and adds nothing to
any loss or gradient; the loop does not move it. Every function that sees
centers therefore also takes `active`; None means all k are active, which is
what a fixed-k method always has.
"""
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
Extras = dict[str, Any]


def squared_distances(z: Array, centers: Array) -> Array:
    """(N, k) squared Euclidean distances, clipped at 0 against round-off."""
    d2 = (jnp.sum(z * z, axis=1, keepdims=True) - 2.0 * z @ centers.T
          + jnp.sum(centers * centers, axis=1)[None, :])
    return jnp.maximum(d2, 0.0)


def nearest_center(z: Array, centers: Array, active: Optional[Array] = None) -> Array:
    """Index of the nearest active center of each row of z."""
    d2 = squared_distances(z, centers)
    if active is not None:
        d2 = jnp.where(active[None, :], d2, jnp.inf)
    return jnp.argmin(d2, axis=1).astype(jnp.int32)


def mse(x: Array, x_rec: Array) -> Array:
    """Mean squared error over all elements (torch.nn.MSELoss, as ClustPy uses)."""
    return jnp.mean(jnp.square(x - x_rec))


class LossInputs(NamedTuple):
    z: Array            # (B, e) embedding of the batch
    x: Array            # (B, d) batch
    x_rec: Array        # (B, d) reconstruction
    centers: Array      # (k, e) centers; gradient flows only if learn_centers
    extras: Extras      # the method's state
    batch_idx: Array    # (B,) row indices of the batch in the full data
    epoch: Array        # scalar int, 0-based clustering epoch
    active: Optional[Array] = None   # (k,) bool; None: every center is active


class EpochEnd(NamedTuple):
    """What an end-of-epoch rule sees, for one seed, after the epoch's last step."""
    z: Array            # (N, e) embedding of the whole data set by the updated network
    centers: Array      # (k, e)
    active: Array       # (k,) bool
    extras: Extras      # the method's state
    epoch: Array        # scalar int: the number of clustering epochs done (1 after the first)
    key: Array          # a PRNG key of this seed and epoch, for rules that draw at random


class Method(NamedTuple):
    name: str
    learn_centers: bool          # centers get gradients (DEC, IDEC, DKM) or a rule (DCN)
    uses_decoder: bool           # reconstruction is part of the loss
    loss_names: tuple[str, ...]  # names of the loss components, 'total' first
    # (z_full, kmeans_centers, kmeans_labels) -> extras
    init: Callable[[Array, Array, Array], Extras]
    # LossInputs -> (total, {name: value})
    loss: Callable[[LossInputs], tuple[Array, dict[str, Array]]]
    # (extras, centers, z_full, epoch, active) -> extras   (once per epoch, before the batches)
    begin_epoch: Callable[..., Extras]
    # (extras, centers, z_batch_after_step, batch_idx, active) -> (extras, centers)
    after_step: Callable[..., tuple[Extras, Array]]
    # (centers, z, epoch, active) -> (N, k) probabilities, or None for hard-only methods
    soft_assign: Optional[Callable[..., Array]] = None
    # EpochEnd -> (extras, centers, active): once per epoch, after the batches and
    # before the epoch's snapshot. The one place where a method may change its
    # number of clusters (the mask), its state from the whole data set, or its
    # centers outside of the optimiser (whose state carries on as it is).
    # None: nothing happens at the end of an epoch.
    end_epoch: Optional[Callable[[EpochEnd], tuple[Extras, Array, Array]]] = None
    # The rest is for methods whose clusters are not k centers (DECCS: an ensemble
    # of classifiers). None keeps what the center-based methods do.
    # (z_full, kmeans_centers, kmeans_labels) -> the trainable cluster parameters
    # that the loop keeps as `centers` (no active mask applies to them); None: the k-means centers
    init_centers: Optional[Callable[[Array, Array, Array], Any]] = None
    # (centers, extras, z_full) -> {'assignments': (N,), ...}: the epoch's partition
    # plus anything else its snapshot should keep; None: the nearest active center
    partition: Optional[Callable[[Any, Extras, Array], dict[str, Array]]] = None
    # (extras, key) -> (steps, B) row indices of the epoch's batches; None: one
    # pass over all rows in a random order
    batches: Optional[Callable[[Extras, Array], Array]] = None
    # extras -> scalar bool, whether this epoch's steps change the parameters
    # (False: nothing to train on yet, or stopped early; the epoch count is static); None: always
    updates: Optional[Callable[[Extras], Array]] = None

    def assign(self, centers: Array, z: Array, active: Optional[Array] = None) -> Array:
        """Hard assignment. For every method here it is the nearest active
        center: DEC's Student-t and DKM's softmax are both monotone in the distance."""
        return nearest_center(z, centers, active)


def no_extras(z_full, centers, labels) -> Extras:
    return {}


def no_epoch_update(extras, centers, z_full, epoch, active=None) -> Extras:
    return extras


def no_center_rule(extras, centers, z_batch, batch_idx, active=None):
    return extras, centers
