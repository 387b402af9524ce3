import ml_collections
import pytest

from dcjax import config as config_lib


def tiny_config(algorithm="dec", seeds=1, seed=0, pretrain_epochs=2, clustering_epochs=3, **overrides):
    """A seconds-long run on a subsample of digits with a small autoencoder."""
    c = config_lib.make_config(algorithm, "digits", "smoke")
    c.dataset.subsample = 400
    c.batch_size = 64
    c.seeds, c.seed = seeds, seed
    c.pretrain.epochs = pretrain_epochs
    if algorithm != "ae_kmeans":
        c.clustering.epochs = clustering_epochs
    c.kmeans.n_init = 3
    c.progress = False
    for key, value in overrides.items():
        target = c
        *path, leaf = key.split(".")
        for p in path:
            target = target[p]
        target[leaf] = value
    return c


@pytest.fixture
def make_tiny_config():
    return tiny_config
