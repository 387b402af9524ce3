"""dcjax: deep clustering in JAX — many seeds per launch, a checkpoint every
epoch, and label-free selection of the best epoch.

    from dcjax import DKM
    labels = DKM(n_clusters=3, n_seeds=3).fit(X).labels_

The estimators (`dcjax.estimators`) are imported on first use, so that
`import dcjax.config` or `import dcjax.train` stays light and `dcjax.train`
never pulls in `dcjax.selection`.
"""
__version__ = "0.1.0"
__all__ = ["AEKMeans", "DEC", "IDEC", "DCN", "DKM", "DECCS", "UnseenDCN", "UnseenDEC", "UnseenDKM"]


def __getattr__(name):
    if name in __all__:
        from dcjax import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'dcjax' has no attribute {name!r}")
