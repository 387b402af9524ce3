"""Algorithms by name. Adding one is adding a module and a line here.

UNSEEN is not in the registry: it is a wrapper (`config.unseen.enabled`)
that `get_method` puts around DCN, DEC or DKM (`dcjax.methods.unseen`).
"""
from dcjax.data import DataError
from dcjax.methods.ae_kmeans import make_ae_kmeans
from dcjax.methods.base import EpochEnd, Method
from dcjax.methods.dcn import make_dcn
from dcjax.methods.dec import make_dec, make_idec
from dcjax.methods.deccs import make_deccs
from dcjax.methods.dkm import make_dkm
from dcjax.methods import unseen

REGISTRY = {
    "ae_kmeans": make_ae_kmeans,
    "dec": make_dec,
    "idec": make_idec,
    "dcn": make_dcn,
    "dkm": make_dkm,
    "deccs": make_deccs,
}


def unseen_enabled(config) -> bool:
    """Whether the run wraps its algorithm in UNSEEN (configs written before
    UNSEEN existed have no `unseen` section: no)."""
    section = config.get("unseen")
    return bool(section is not None and section.get("enabled", False))


def get_method(config) -> Method:
    name = config.algorithm
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    method = REGISTRY[name](config)
    return unseen.make_unseen(method, config) if unseen_enabled(config) else method


def n_centers(config, n_clusters: int) -> int:
    """How many centers a run keeps: `unseen.k_init` for UNSEEN (an upper
    bound; the active mask says how many are alive), else the data set's
    (or the configured) number of clusters, which an unlabelled data set
    without `dataset.n_clusters` does not have (0)."""
    if unseen_enabled(config):
        unseen.check(config)   # k_init, t and the base algorithm, in UNSEEN's own words
        return int(config.unseen.k_init)
    if int(n_clusters) < 1:
        raise DataError(f"data set {config.dataset.name!r} has no labels, so the number of clusters is unknown: "
                        f"set dataset.n_clusters, or let UNSEEN find it (a config named unseen_dcn, unseen_dec "
                        f"or unseen_dkm)")
    return int(n_clusters)


def algorithm_label(config) -> str:
    """The name results are filed under: 'unseen_dcn' for UNSEEN around DCN, else the algorithm."""
    return f"unseen_{config.algorithm}" if unseen_enabled(config) else str(config.algorithm)


__all__ = ["EpochEnd", "Method", "REGISTRY", "algorithm_label", "get_method", "n_centers", "unseen_enabled"]
