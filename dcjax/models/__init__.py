from dcjax.models.autoencoder import Autoencoder, make_autoencoder

__all__ = ["Autoencoder", "make_autoencoder"]
