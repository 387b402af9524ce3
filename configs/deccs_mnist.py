"""DECCS on mnist: the shared autoencoder protocol (d-500-500-2000-10, 100 pretraining
epochs), then up to 10 rounds of the original's ensemble and SGD (dcjax/methods/deccs.py)."""
from dcjax.config import make_config


def get_config(arg=None):
    return make_config("deccs", "mnist", arg)
