"""dec on digits with the published protocol (AE d-500-500-2000-10, 100 + 150 epochs)."""
from dcjax.config import make_config


def get_config(arg=None):
    return make_config("dec", "digits", arg)
