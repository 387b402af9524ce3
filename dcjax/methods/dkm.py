"""DKM, Deep k-Means (Fard et al., 2020).

L = λ_rec·L_rec + λ_clust·mean_i Σ_k softmax_k(−α‖z_i−μ_k‖²)·f(z_i, μ_k), with
centers learned by gradient. The paper's f is the squared distance
(`distance='squared'`, default); ClustPy uses the unsquared one
(`distance='euclidean'`). α = 1000 fixed as in the published protocol, or the
paper's annealing α_{i+1} = 2^{1/log(i)²}·α_i from α_1 = 0.1 over 40 values
(`alpha_schedule='annealed'`), each value held for an equal share of the epochs.
"""
import math

import jax
import jax.numpy as jnp

from dcjax.methods.base import (LossInputs, Method, mse, no_center_rule, no_epoch_update,
                                squared_distances)


def annealed_alphas(first: float = 0.1, count: int = 40) -> list[float]:
    alphas = [first]
    for i in range(2, count + 1):
        alphas.append(2.0 ** (1.0 / math.log(i) ** 2) * alphas[-1])
    return alphas


def make_dkm(config) -> Method:
    cfg = config.dkm
    lambda_rec, lambda_clust = float(cfg.lambda_rec), float(cfg.lambda_clust)
    if cfg.distance not in ("squared", "euclidean"):
        raise ValueError(f"dkm.distance must be 'squared' or 'euclidean', got {cfg.distance!r}")
    if cfg.alpha_schedule == "fixed":
        alphas = jnp.asarray([float(cfg.alpha)], jnp.float32)
    elif cfg.alpha_schedule == "annealed":
        alphas = jnp.asarray(annealed_alphas(), jnp.float32)
    else:
        raise ValueError(f"dkm.alpha_schedule must be 'fixed' or 'annealed', got {cfg.alpha_schedule!r}")
    n_epochs = max(int(config.clustering.epochs), 1)

    def alpha_at(epoch):
        i = jnp.minimum(epoch * alphas.shape[0] // n_epochs, alphas.shape[0] - 1)
        return alphas[i]

    def probabilities(d2, epoch, active):
        # softmax is shift-invariant, which keeps exp(-α d²) from underflowing;
        # an inactive center gets logit -inf: probability exactly 0, no gradient
        logits = -alpha_at(epoch) * d2
        if active is not None:
            logits = jnp.where(active[None, :], logits, -jnp.inf)
        return jax.nn.softmax(logits, axis=1)

    def soft_assign(centers, z, epoch, active=None):
        return probabilities(squared_distances(z, centers), epoch, active)

    def loss(inp: LossInputs):
        d2 = squared_distances(inp.z, inp.centers)
        probs = probabilities(d2, inp.epoch, inp.active)
        f = d2 if cfg.distance == "squared" else jnp.sqrt(d2 + 1e-12)
        if inp.active is not None:   # 0 · f, not 0 · inf or a gradient through a dead center's f
            f = jnp.where(inp.active[None, :], f, 0.0)
        clust = jnp.mean(jnp.sum(probs * f, axis=1))
        rec = mse(inp.x, inp.x_rec)
        total = lambda_rec * rec + lambda_clust * clust
        return total, {"total": total, "reconstruction": rec, "clustering": clust}

    return Method(name="dkm", learn_centers=True, uses_decoder=True,
                  loss_names=("total", "reconstruction", "clustering"),
                  init=lambda z, c, l: {}, loss=loss, begin_epoch=no_epoch_update,
                  after_step=no_center_rule, soft_assign=soft_assign)
