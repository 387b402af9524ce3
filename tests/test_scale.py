"""The reading side at the user's scale, measured without data.

XLA's memory analysis of the compiled scoring programs at MNIST size
(70,000 rows) with 10 seeds: a few seconds of compiling, no array is
allocated. A buffer that grows with N^2 (the full SVD of `effective_rank`
asked for 39 GB per seed) or with candidates x N x k fails here, not on a
user's machine.
"""
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from dcjax import evaluate, launch

SEEDS, N, E, K = 10, 70_000, 10, 10
EPOCHS = 151                      # the protocol's clustering epochs, and epoch 0
GB = 1e9
f32, i32 = jnp.float32, jnp.int32


def temp_bytes(fn, *args, **static) -> int:
    return fn.lower(*args, **static).compile().memory_analysis().temp_size_in_bytes


def spec(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype)


def test_label_free_columns_need_under_1_gb_at_mnist_with_10_seeds():
    temp = temp_bytes(evaluate.label_free_columns, spec((SEEDS, N, E), f32), spec((SEEDS, N), i32),
                      spec((SEEDS, N, K), f32), jax.random.PRNGKey(0), n_clusters=K,
                      sample_size=evaluate.SILHOUETTE_SAMPLES)
    assert temp <= 1 * GB, f"{temp / GB:.2f} GB"


@pytest.mark.parametrize("what", ["kmeans", "stability", "size_entropies"])
def test_the_other_scoring_programs_need_under_1_gb_at_mnist_with_10_seeds(what):
    if what == "kmeans":      # the pretraining epochs' k-means, every seed at once
        temp = temp_bytes(evaluate.kmeans_seeds, spec((SEEDS, N, E), f32), spec((SEEDS, 2), jnp.uint32),
                          n_clusters=K, n_init=10)
    elif what == "stability":
        temp = temp_bytes(evaluate.clustering_columns, spec((SEEDS, N), i32), spec((SEEDS, N), i32), True,
                          n_clusters=K)
    else:                     # the launch: every seed x epoch a candidate
        temp = temp_bytes(launch.size_entropies, spec((SEEDS * EPOCHS, N), jnp.uint8), n_clusters=K)
    assert temp <= 1 * GB, f"{what}: {temp / GB:.2f} GB"


def test_importing_selection_loads_neither_flax_optax_nor_the_training_loop():
    code = ("import sys, dcjax.selection, dcjax.launch, dcjax.run, dcjax.evaluate; "
            "print(sorted(m for m in ('flax', 'optax', 'dcjax.train', 'dcjax.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
