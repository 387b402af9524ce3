"""Tag supervision in the one training loop (`tags.*` in the config), off by default.

Two terms, each added to whatever the phase minimises when its weight is > 0:
- `tags.weight` (lambda_tag): a linear tag head on the embedding
  (`Autoencoder.tag_logits`) trained with binary cross-entropy on the
  per-sample tags, in pretraining and clustering, as the thesis adds to DECCS
  (its best lambda_tag: 0.5). 0 means no head and no term: the model, its
  parameters and every step are those of a run without the option.
- `tags.pairwise_weight`: DDC's pairwise loss (Zhang & Davidson 2021, Eqs.
  5-6) on self-generated "together" pairs, clustering only. Once per epoch the
  current partition is explained (`dcjax.explain.ilp_explanations`, alpha
  `tags.alpha`); g(t) keeps the tags of the explanations. In each batch, every
  row's partner is the row minimising gamma * |g(t_i) - g(t_j)| - |f(x_i) - f(x_j)|:
  alike in the explanation's tags, apart in the clustering. The loss pulls the
  pair together: KL(p_i || p_j) of the method's soft assignments, where it has
  them (DEC, IDEC, DKM, UNSEEN's); else (DCN, DECCS) the squared distance of
  their embeddings, f being the embedding.
Tags come from `tags.file`, or from the data file's `dataset.tag_columns`
(`dcjax.explain`'s loaders), aligned with the rows trained on.
"""
import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8


def enabled(config) -> bool:
    t = config.get("tags", None)
    return t is not None and (float(t.weight) > 0 or float(t.pairwise_weight) > 0)


def training_tags(config, n_rows: int) -> np.ndarray:
    """(N, T) float32 tags of the rows a run trains on."""
    from dcjax import explain

    columns = explain._tag_column_names(config)
    if config.tags.file:
        tags, _ = explain.load_tags(config.tags.file)
    elif columns:
        tags, _ = explain.split_tag_columns(config.dataset.name, columns)
    else:
        raise explain.ExplainError("tags.weight or tags.pairwise_weight > 0 needs tags.file or "
                                   "dataset.tag_columns")
    rows = explain._rows(config, n_rows, len(tags))
    return tags if rows is None else tags[rows]


def bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean binary cross-entropy of logits against targets in [0, 1]."""
    return jnp.mean(jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def partners(masked_tags: jax.Array, f: jax.Array, gamma: float) -> jax.Array:
    """(B,) each row's partner in the batch by DDC's Eq. 5 (never itself)."""
    tag_d = jnp.sqrt(jnp.maximum(jnp.sum((masked_tags[:, None] - masked_tags[None]) ** 2, -1), 0) + EPS)
    f_d = jnp.sqrt(jnp.maximum(jnp.sum((f[:, None] - f[None]) ** 2, -1), 0) + EPS)
    j = gamma * tag_d - f_d
    return jnp.argmin(jnp.where(jnp.eye(len(f), dtype=bool), jnp.inf, j), axis=1)


def pairwise_loss(f: jax.Array, partner: jax.Array, probabilities: bool) -> jax.Array:
    """DDC's Eq. 6, KL(p_i || p_j) over the pairs, for soft assignments; else
    the mean squared distance of the pairs' embeddings. The partner is a target
    only through its own row's gradient, as in a batch of pairs."""
    g = jax.lax.stop_gradient(f[partner])
    if probabilities:
        p = jnp.clip(f, EPS, 1.0)
        return jnp.mean(jnp.sum(p * (jnp.log(p) - jnp.log(jnp.clip(g, EPS, 1.0))), -1))
    return jnp.mean(jnp.sum((f - g) ** 2, -1))


def explanation_mask_host(labels: np.ndarray, tags: np.ndarray, alpha: float) -> np.ndarray:
    """g's diagonal: 1 for the tags DDC's ILP explains the partition with;
    every tag where no explanation meets alpha (e.g. one cluster left)."""
    from dcjax import explain

    _, _, q = explain.cluster_frequencies(np.asarray(labels), tags)
    try:
        w, _ = explain.ilp_explanations(q, alpha, time_limit=10.0)
    except explain.ExplainError:
        return np.ones(tags.shape[1], np.float32)
    return w.any(0).astype(np.float32)
