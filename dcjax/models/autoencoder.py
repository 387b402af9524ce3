"""Feed-forward autoencoder d-500-500-2000-10 with a mirrored decoder.

The layer sizes, the activation and the weight initialisation are configurable
because the published numbers were produced with ClustPy (PyTorch defaults,
LeakyReLU) while the original papers use ReLU.
"""
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "leaky_relu": nn.leaky_relu,  # slope 0.01, as torch.nn.LeakyReLU
}


def _torch_bias_init(fan_in: int):
    """PyTorch's nn.Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(features: int, fan_in: int, init: str, name: str) -> nn.Dense:
    """A Dense layer initialised like PyTorch ('torch') or like flax ('lecun')."""
    if init == "torch":
        # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        return nn.Dense(features, kernel_init=kernel_init,
                        bias_init=_torch_bias_init(fan_in), name=name)
    if init == "lecun":
        return nn.Dense(features, name=name)
    raise ValueError(f"unknown init {init!r}; expected 'torch' or 'lecun'")


class Autoencoder(nn.Module):
    """MLP encoder input_dim -> hidden_dims -> embedding_dim and its mirror image.

    The embedding layer and the output layer are linear, as in DEC/IDEC/DCN/DKM.
    """

    input_dim: int
    hidden_dims: Sequence[int] = (500, 500, 2000)
    embedding_dim: int = 10
    activation: str = "relu"
    weight_init: str = "torch"
    n_tags: int = 0   # > 0: a linear tag head on the embedding (DDC/the thesis's tag supervision)

    def setup(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        enc_sizes = [self.input_dim, *self.hidden_dims, self.embedding_dim]
        dec_sizes = enc_sizes[::-1]
        self.encoder_layers = [dense(out, fan_in, self.weight_init, f"encoder_{i}")
                               for i, (fan_in, out) in enumerate(zip(enc_sizes[:-1], enc_sizes[1:]))]
        self.decoder_layers = [dense(out, fan_in, self.weight_init, f"decoder_{i}")
                               for i, (fan_in, out) in enumerate(zip(dec_sizes[:-1], dec_sizes[1:]))]
        if self.n_tags:   # 0: no head at all, so the parameters are those of a model without the option
            self.tag_head = dense(self.n_tags, self.embedding_dim, self.weight_init, "tag_head")

    def _mlp(self, layers, h):
        act = ACTIVATIONS[self.activation]
        for layer in layers[:-1]:
            h = act(layer(h))
        return layers[-1](h)

    def encode(self, x: jax.Array) -> jax.Array:
        return self._mlp(self.encoder_layers, x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self._mlp(self.decoder_layers, z)

    def tag_logits(self, z: jax.Array) -> jax.Array:
        """(B, n_tags) logits of the tags from the embedding."""
        return self.tag_head(z)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.encode(x)
        if self.n_tags and self.is_initializing():   # creates the head's parameters
            self.tag_head(z)
        return z, self.decode(z)


def make_autoencoder(input_dim: int, model_config, n_clusters: int = 0, n_tags: int = 0) -> Autoencoder:
    """`embedding_dim` 0 means one dimension per cluster (DECCS's original);
    `n_tags` > 0 adds the tag head."""
    embedding_dim = int(model_config.embedding_dim) or int(n_clusters)
    if embedding_dim < 1:
        raise ValueError("model.embedding_dim is 0 (one per cluster), but the number of clusters is unknown")
    return Autoencoder(input_dim=input_dim,
                       hidden_dims=tuple(model_config.hidden_dims),
                       embedding_dim=embedding_dim,
                       activation=model_config.activation,
                       weight_init=model_config.weight_init,
                       n_tags=int(n_tags))
