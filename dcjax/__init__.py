"""dcjax: deep clustering in JAX — many seeds per launch, a checkpoint every
epoch, and label-free selection of the best epoch."""
__version__ = "0.1.0"
