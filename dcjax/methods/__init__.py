"""Algorithms by name. Adding one is adding a module and a line here."""
from dcjax.methods.ae_kmeans import make_ae_kmeans
from dcjax.methods.base import Method
from dcjax.methods.dcn import make_dcn
from dcjax.methods.dec import make_dec, make_idec
from dcjax.methods.dkm import make_dkm

REGISTRY = {
    "ae_kmeans": make_ae_kmeans,
    "dec": make_dec,
    "idec": make_idec,
    "dcn": make_dcn,
    "dkm": make_dkm,
}


def get_method(config) -> Method:
    name = config.algorithm
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](config)


__all__ = ["Method", "REGISTRY", "get_method"]
