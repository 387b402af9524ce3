"""AE+k-means: the baseline. Pretrain the autoencoder, run k-means on its
embedding, stop. Its clustering phase has no epochs; its clustering epoch 0
is the k-means result that every other method starts from."""
from dcjax.methods.base import LossInputs, Method, mse, no_center_rule, no_epoch_update


def make_ae_kmeans(config) -> Method:
    def loss(inp: LossInputs):
        rec = mse(inp.x, inp.x_rec)
        return rec, {"total": rec, "reconstruction": rec}

    return Method(name="ae_kmeans", learn_centers=False, uses_decoder=True,
                  loss_names=("total", "reconstruction"),
                  init=lambda z, c, l: {}, loss=loss, begin_epoch=no_epoch_update,
                  after_step=no_center_rule)
