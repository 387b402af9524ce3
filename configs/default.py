"""The default: DEC on scikit-learn's digits, which works anywhere offline."""
from dcjax.config import make_config


def get_config(arg=None):
    return make_config("dec", "digits", arg)
