"""DCN (Yang et al., 2017): reconstruction + λ/2·‖z − μ_assign‖² with hard assignments.

Per batch, as in the original code (and ClustPy): (1) one gradient step on the
network with assignments and centers fixed; (2) re-embed the batch with the
updated network and assign each point to its nearest center; (3) move each
center towards its new points with step 1/count, count starting at 100.

Step (3) applied point by point with the count incremented before each step
is a running mean, so per batch it is written in closed form:
count_k += m_k;  μ_k += (Σ_{i∈k} z_i − m_k μ_k) / count_k.
"""
import jax
import jax.numpy as jnp

from dcjax.methods.base import LossInputs, Method, mse, nearest_center, no_epoch_update


def make_dcn(config) -> Method:
    cfg = config.dcn
    lambda_rec, lambda_clust = float(cfg.lambda_rec), float(cfg.lambda_clust)
    init_count = float(cfg.init_count)

    def init(z_full, centers, labels):
        k = centers.shape[0]
        return {"labels": labels.astype(jnp.int32),
                "counts": jnp.full((k,), init_count, jnp.float32)}

    def loss(inp: LossInputs):
        assigned = inp.centers[inp.extras["labels"][inp.batch_idx]]
        clust = jnp.mean(jnp.sum(jnp.square(inp.z - assigned), axis=1))
        rec = mse(inp.x, inp.x_rec)
        total = lambda_rec * rec + 0.5 * lambda_clust * clust
        return total, {"total": total, "reconstruction": rec, "clustering": clust}

    def after_step(extras, centers, z_batch, batch_idx, active=None):
        k = centers.shape[0]
        labels = nearest_center(z_batch, centers, active)   # an inactive center gets no point, so it stays
        one_hot = jax.nn.one_hot(labels, k, dtype=z_batch.dtype)      # (B, k)
        batch_counts = jnp.sum(one_hot, axis=0)                         # (k,)
        batch_sums = one_hot.T @ z_batch                                # (k, e)
        counts = extras["counts"] + batch_counts
        centers = centers + (batch_sums - batch_counts[:, None] * centers) / counts[:, None]
        extras = {**extras, "labels": extras["labels"].at[batch_idx].set(labels), "counts": counts}
        return extras, centers

    return Method(name="dcn", learn_centers=False, uses_decoder=True,
                  loss_names=("total", "reconstruction", "clustering"),
                  init=init, loss=loss, begin_epoch=no_epoch_update, after_step=after_step)
