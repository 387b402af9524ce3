"""DEC (Xie et al., 2016) and IDEC (Guo et al., 2017).

Student-t soft assignments q_ij ∝ (1 + ||z_i - μ_j||²/α)^(-(α+1)/2), trained to
match the sharpened target p_ij ∝ q_ij² / f_j (f_j = Σ_i q_ij) by KL(P‖Q).
The target is held fixed while it is used (no gradient through P).

Where P comes from is a choice the papers and ClustPy make differently:
- `target='batch'`: P from the batch's own Q at every step (ClustPy, which
  produced the published table);
- `target='epoch'`: P from the whole data set, refreshed once per epoch (the
  paper refreshes every `update_interval` iterations; one epoch of USPS at
  batch 256 is 36 iterations).
IDEC adds the reconstruction loss: L = L_rec + γ·KL, γ = 0.1.
"""
import jax
import jax.numpy as jnp

from dcjax.methods.base import LossInputs, Method, mse, no_center_rule, squared_distances


def student_t(z, centers, alpha, active=None):
    """DEC's soft assignment Q (N, k); an inactive center gets exactly 0 (and no gradient)."""
    q = (1.0 + squared_distances(z, centers) / alpha) ** (-(alpha + 1.0) / 2.0)
    if active is not None:
        q = jnp.where(active[None, :], q, 0.0)
    return q / jnp.sum(q, axis=1, keepdims=True)


def target_distribution(q):
    """DEC's sharpened target P: square, divide by cluster frequency, renormalise.
    A column of zeros (an inactive center) stays zero instead of 0/0."""
    frequency = jnp.sum(q, axis=0)
    weight = jnp.where(frequency > 0, q ** 2 / jnp.where(frequency > 0, frequency, 1.0), 0.0)
    return weight / jnp.sum(weight, axis=1, keepdims=True)


def kl_divergence(p, q, eps=1e-8):
    """Mean over points of KL(p_i ‖ q_i); P is treated as a constant."""
    p = jax.lax.stop_gradient(p)
    return jnp.mean(jnp.sum(p * (jnp.log(p + eps) - jnp.log(q + eps)), axis=1))


def make(cfg, reconstruction_weight: float, cluster_weight: float, name: str) -> Method:
    alpha = float(cfg.alpha)
    target_mode = cfg.target
    if target_mode not in ("batch", "epoch"):
        raise ValueError(f"{name}.target must be 'batch' or 'epoch', got {target_mode!r}")
    uses_decoder = reconstruction_weight > 0

    def init(z_full, centers, labels):
        if target_mode == "epoch":
            return {"target": target_distribution(student_t(z_full, centers, alpha))}
        return {}

    def begin_epoch(extras, centers, z_full, epoch, active=None):
        if target_mode == "epoch":   # a wrapper's state in extras (UNSEEN) is kept
            return {**extras, "target": target_distribution(student_t(z_full, centers, alpha, active))}
        return extras

    def loss(inp: LossInputs):
        q = student_t(inp.z, inp.centers, alpha, inp.active)
        p = inp.extras["target"][inp.batch_idx] if target_mode == "epoch" else target_distribution(q)
        kl = kl_divergence(p, q)
        parts = {"clustering": kl}
        total = cluster_weight * kl
        if uses_decoder:
            rec = mse(inp.x, inp.x_rec)
            parts["reconstruction"] = rec
            total = total + reconstruction_weight * rec
        return total, {"total": total, **parts}

    return Method(
        name=name, learn_centers=True, uses_decoder=uses_decoder,
        loss_names=("total", "clustering") + (("reconstruction",) if uses_decoder else ()),
        init=init, loss=loss, begin_epoch=begin_epoch, after_step=no_center_rule,
        soft_assign=lambda centers, z, epoch, active=None: student_t(z, centers, alpha, active))


def make_dec(config) -> Method:
    return make(config.dec, reconstruction_weight=0.0, cluster_weight=1.0, name="dec")


def make_idec(config) -> Method:
    return make(config.dec, reconstruction_weight=1.0, cluster_weight=float(config.idec.gamma), name="idec")
