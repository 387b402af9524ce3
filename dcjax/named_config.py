"""The config file behind `--config NAME`: ml_collections reads configs from
files, so `python -m dcjax.main --config dkm_usps:smoke` loads this file with
the argument 'dkm_usps:smoke' (see `dcjax.config.config_from_name`)."""
from dcjax.config import config_from_name


def get_config(arg=None):
    name, _, presets = (arg or "default").partition(":")
    return config_from_name(name, presets or None)
