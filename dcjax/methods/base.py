"""What an algorithm contributes to the one shared training loop.

Every deep-clustering method here is an autoencoder plus cluster centers. The
loop in `dcjax.train` owns data, batching, optimiser and checkpoints; a method
only says how to start (`init`), what to minimise (`loss`), how to move the
centers outside of the gradient (`after_step`), what to refresh once per epoch
(`begin_epoch`) and how to assign points (`assign`, `soft_assign`).

All functions are pure and act on ONE seed: the loop maps them over seeds (vmap or lax.map).
`extras` is the method's own per-seed state (e.g. DCN's counts and labels).
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


def nearest_center(z: Array, centers: Array) -> Array:
    return jnp.argmin(squared_distances(z, centers), axis=1).astype(jnp.int32)


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


class Method(NamedTuple):
    name: str
    learn_centers: bool          # centers get gradients (DEC, IDEC, DKM) or a rule (DCN)
    uses_decoder: bool           # reconstruction is part of the loss
    loss_names: tuple[str, ...]  # names of the loss components, 'total' first
    # (z_full, kmeans_centers, kmeans_labels) -> extras
    init: Callable[[Array, Array, Array], Extras]
    # LossInputs -> (total, {name: value})
    loss: Callable[[LossInputs], tuple[Array, dict[str, Array]]]
    # (extras, centers, z_full, epoch) -> extras   (once per epoch, before the batches)
    begin_epoch: Callable[[Extras, Array, Array, Array], Extras]
    # (extras, centers, z_batch_after_step, batch_idx) -> (extras, centers)
    after_step: Callable[[Extras, Array, Array, Array], tuple[Extras, Array]]
    # (centers, z, epoch) -> (N, k) probabilities, or None for hard-only methods
    soft_assign: Optional[Callable[[Array, Array, Array], Array]] = None

    def assign(self, centers: Array, z: Array) -> Array:
        """Hard assignment. For every method here it is the nearest center:
        DEC's Student-t and DKM's softmax are both monotone in the distance."""
        return nearest_center(z, centers)


def no_extras(z_full, centers, labels) -> Extras:
    return {}


def no_epoch_update(extras, centers, z_full, epoch) -> Extras:
    return extras


def no_center_rule(extras, centers, z_batch, batch_idx):
    return extras, centers
