"""UNSEEN around dcn on fmnist: k_init = 35 clusters to start from, a cluster dies below
t = 0.5 of its reference size (dcjax/methods/unseen.py); the dcn protocol otherwise."""
from dcjax.config import make_config


def get_config(arg=None):
    return make_config("unseen_dcn", "fmnist", arg)
