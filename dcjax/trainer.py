"""The pure builder of the one training loop: `make_train(config, n, d, k)`.

It builds pure per-seed functions — an epoch is one `lax.scan` over
mini-batches — and returns them `jit(vmap(...))`'d over seeds
(`jit(lax.map(...))`'d on one CPU, see below), so any number of seeds is one
compiled program. `Trainer.train(keys, x)` is the whole run as a pure
function of the seed keys (benchmarks, tests); `dcjax.train` drives the same
compiled epoch functions from Python, writing a checkpoint after every epoch,
and `dcjax.replay` rebuilds any epoch with them: both give bit-identical
numbers, since they run the same executables. Nothing here touches disk.

Seeds go through `vmap` (one batched program: what a GPU wants, and what
shards the seed axis over devices) or `lax.map` ('loop': the one-seed program
once per seed). XLA may sum in another order when the number of vmapped seeds
changes, so under vmap a seed alone and the same seed among others agree to
float round-off (~1e-6 after an epoch); under loop they are bit-identical.
On CPU, loop is also faster: XLA lays out the batched weight gradients
transposed, so every Adam step pays extra transposes (USPS pretraining epoch,
2 cores: 0.82 s vmap vs 0.74 s loop for 1 seed, 15.1 vs 11.7 s for 16), and
vmap brings no parallelism the matmuls do not already have. The default
'auto' therefore means loop on a single CPU device and vmap otherwise.

Randomness: seed s uses `PRNGKey(s)`; the batch order of epoch e of phase p is
drawn from `fold_in(fold_in(key, p), e)`, so a seed gives the same run alone
or among others, and a resumed run the same as an uninterrupted one.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.cluster import KMeans

from dcjax import data, methods
from dcjax import tags as tags_lib
from dcjax.config import seed_ids
from dcjax.methods.base import EpochEnd, LossInputs, no_center_rule
from dcjax.models import make_autoencoder


PRETRAIN, CLUSTERING = 1, 2  # folded into the seed key: one random stream per phase
EPOCH_END = 4                # the stream of end-of-epoch rules (evaluate.py's k-means uses 3)


def kmeans_host(z: np.ndarray, seed: np.ndarray, n_clusters: int, n_init: int):
    """scikit-learn k-means on one seed's embedding (host side, via pure_callback)."""
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=int(seed))
    labels = km.fit_predict(np.asarray(z, np.float64))
    return km.cluster_centers_.astype(np.float32), labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Seed-vmapped, jitted functions of one configuration. State leaves have
    the seed axis first; `x` (N, d) is shared by all seeds."""
    config: ml_collections.ConfigDict
    n_clusters: int               # centers per seed (UNSEEN: k_init; state['active'] says which are alive)
    init_pretrain: Callable       # keys -> state
    pretrain_epoch: Callable      # (state, x) -> (state, out)
    init_clustering: Callable     # (pretrain params, keys, x) -> (state, out)
    cluster_epoch: Callable       # (state, x) -> (state, out)
    pretrain_snapshot: Callable   # (state, x) -> snapshot
    cluster_snapshot: Callable    # (state, x) -> snapshot
    train: Callable               # (keys, x) -> (pretrain state, clustering state, history)
                                  # history["assignments"]: (S, epochs + 1, N), epoch 0 = k-means;
                                  # history["active"]: (S, epochs + 1, k), the clusters alive
    embed: Callable               # (ae params, x) -> (S, N, e)


def _clustering_optimizer(learning_rate: float, uses_decoder: bool, kind: str = "adam",
                          momentum: float = 0.9) -> optax.GradientTransformation:
    """Adam (or SGD with momentum, as DECCS uses) over what the clustering loss
    can move. A method without reconstruction (DEC) leaves the decoder out: its
    gradient is zero, so Adam would never change it, yet would still update
    moments and weights of half the network every step (PyTorch skips
    parameters without a gradient; ClustPy's DEC relies on that). Results are
    identical either way."""
    if kind == "adam":
        adam = optax.adam(learning_rate)
    elif kind == "sgd":
        adam = optax.sgd(learning_rate, momentum=momentum or None)
    else:
        raise ValueError(f"clustering.optimizer must be 'adam' or 'sgd', got {kind!r}")
    if uses_decoder:
        return adam

    def labels(params):
        return {"ae": {name: jax.tree.map(lambda _: "frozen" if name.startswith("decoder") else "train", layer)
                       for name, layer in params["ae"].items()},
                "centers": "train"}
    return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()}, labels)


def resolve_seed_parallelism(setting: str) -> str:
    """'auto' -> 'loop' on a single CPU device (faster there, and bit-identical
    per seed), 'vmap' on accelerators or several devices (parallel, shardable)."""
    if setting == "auto":
        return "loop" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    if setting not in ("vmap", "loop"):
        raise ValueError(f"seed_parallelism must be 'auto', 'vmap' or 'loop', got {setting!r}")
    return setting


def make_train(config: ml_collections.ConfigDict, n: int, d: int, n_clusters: int) -> Trainer:
    """`n_clusters`: the data set's (or configured) k. A method that starts
    from an upper bound (UNSEEN) keeps `methods.n_centers(config, k)` centers instead."""
    # Tag supervision (dcjax/tags.py): None when off, and then nothing below changes.
    tag_values = jnp.asarray(tags_lib.training_tags(config, n)) if tags_lib.enabled(config) else None
    tag_weight = 0.0 if tag_values is None else float(config.tags.weight)
    pair_weight = 0.0 if tag_values is None else float(config.tags.pairwise_weight)
    model = make_autoencoder(d, config.model, n_clusters, tag_values.shape[1] if tag_weight else 0)
    parallelism = resolve_seed_parallelism(config.seed_parallelism)
    if methods.unseen_enabled(config):
        methods.unseen.check(config, n_samples=n)
    method = methods.get_method(config)
    n_clusters = methods.n_centers(config, n_clusters)
    batch_size = int(config.batch_size)
    # Equal chunks of at most eval_chunk rows: the least padding for that many chunks.
    chunk = -(-n // -(-n // min(int(config.eval_chunk), n)))
    pretrain_tx = optax.adam(config.pretrain.learning_rate)
    cluster_tx = _clustering_optimizer(config.clustering.learning_rate, method.uses_decoder,
                                       config.clustering.get("optimizer", "adam"),
                                       float(config.clustering.get("momentum", 0.9)))
    # The learning rate of clustering epoch e (0-based) is lr * lr_decay**e (DECCS: 0.9 per round).
    lr_decay = float(config.clustering.get("lr_decay", 1.0))
    snapshot_dtype = jnp.dtype(config.checkpoint.embedding_dtype)

    def encode(params, x):
        return model.apply({"params": params}, x, method=model.encode)

    def embed(params, x):
        """Full-data embedding in fixed-size chunks, so memory stays bounded."""
        n_chunks = -(-n // chunk)
        padded = jnp.pad(x, ((0, n_chunks * chunk - n), (0, 0))).reshape(n_chunks, chunk, d)
        z = jax.lax.map(lambda xb: encode(params, xb), padded)
        return z.reshape(n_chunks * chunk, -1)[:n]

    def tag_bce(ae_params, z, idx):
        return tags_lib.bce(model.apply({"params": ae_params}, z, method=model.tag_logits), tag_values[idx])

    def with_tag_terms(out, ae_params, z, idx, centers, epoch, active, mask):
        """The method's (total, parts) plus the tag terms that are on."""
        total, parts = out
        if tag_weight:
            parts = {**parts, "tags": tag_bce(ae_params, z, idx)}
            total = total + tag_weight * parts["tags"]
        if pair_weight:
            soft = method.soft_assign is not None
            f = method.soft_assign(centers, z, epoch, active) if soft else z
            partner = tags_lib.partners(tag_values[idx] * mask, jax.lax.stop_gradient(f), float(config.tags.gamma))
            parts = {**parts, "pairwise": tags_lib.pairwise_loss(f, partner, soft)}
            total = total + pair_weight * parts["pairwise"]
        return total, {**parts, "total": total} if "total" in parts else parts

    def epoch_batches(key, phase, epoch):
        return data.batch_indices(jax.random.fold_in(jax.random.fold_in(key, phase), epoch), n, batch_size)

    # config.last_batch == 'keep': the ragged rest of the epoch's permutation is
    # one more step, of its own (static) size, after the scan over full batches.
    keep_last = config.get("last_batch", "drop") == "keep" and n % batch_size != 0

    def with_last_batch(step, carry, losses, key, phase, epoch):
        """`step` once more on the epoch's ragged last batch (when kept); its
        losses become the epoch's last row."""
        if not keep_last:
            return carry, losses
        tail = data.last_batch_indices(jax.random.fold_in(jax.random.fold_in(key, phase), epoch), n, batch_size)
        carry, last = step(carry, tail)
        return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), losses, last)

    # -- pretraining ---------------------------------------------------------
    def init_pretrain(key):
        params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, d), jnp.float32))["params"]
        return {"params": params, "opt_state": pretrain_tx.init(params), "key": key,
                "epoch": jnp.zeros((), jnp.int32)}

    def pretrain_snapshot(state, x):
        return {"embedding": embed(state["params"], x).astype(snapshot_dtype)}

    def pretrain_epoch(state, x):
        def step(carry, idx):
            params, opt_state = carry
            xb = x[idx]

            def loss_fn(p):
                _, x_rec = model.apply({"params": p}, xb)
                return jnp.mean(jnp.square(xb - x_rec))

            def tagged_loss_fn(p):   # reconstruction plus lambda_tag * BCE of the tag head
                z, x_rec = model.apply({"params": p}, xb)
                rec, bce = jnp.mean(jnp.square(xb - x_rec)), tag_bce(p, z, idx)
                return rec + tag_weight * bce, {"reconstruction": rec, "tags": bce}

            if tag_weight:
                (_, parts), grads = jax.value_and_grad(tagged_loss_fn, has_aux=True)(params)
            else:
                loss, grads = jax.value_and_grad(loss_fn)(params)
                parts = {"reconstruction": loss}
            updates, opt_state = pretrain_tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), parts

        batches = epoch_batches(state["key"], PRETRAIN, state["epoch"])
        (params, opt_state), losses = jax.lax.scan(step, (state["params"], state["opt_state"]), batches)
        (params, opt_state), losses = with_last_batch(step, (params, opt_state), losses, state["key"], PRETRAIN,
                                                      state["epoch"])
        state = {**state, "params": params, "opt_state": opt_state, "epoch": state["epoch"] + 1}
        return state, {"losses": losses, **pretrain_snapshot(state, x)}

    # -- clustering ----------------------------------------------------------
    # The clustering state holds `active`, a (k,) bool mask of the clusters
    # alive: all True unless the method's end-of-epoch rule removes some
    # (UNSEEN). Shapes never change; a dead center is masked everywhere.
    def snapshot_of(state, z):
        centers, active = state["params"]["centers"], state["active"]
        if method.partition is None:
            partition = {"assignments": method.assign(centers, z, active)}
        else:
            partition = method.partition(centers, state["extras"], z)
        labels = partition["assignments"]
        return {"embedding": z.astype(snapshot_dtype), **partition, "centers": centers,
                "cluster_sizes": jnp.bincount(labels, length=n_clusters).astype(jnp.int32),
                "active": active}

    def cluster_snapshot(state, x):
        return snapshot_of(state, embed(state["params"]["ae"], x))

    def init_clustering(ae_params, key, x):
        z = embed(ae_params, x)
        seed = jax.random.randint(jax.random.fold_in(key, CLUSTERING), (), 0, 2 ** 31 - 1)
        shapes = (jax.ShapeDtypeStruct((n_clusters, z.shape[1]), jnp.float32),
                  jax.ShapeDtypeStruct((n,), jnp.int32))
        centers, labels = jax.pure_callback(
            lambda zz, s: kmeans_host(zz, s, n_clusters, int(config.kmeans.n_init)),
            shapes, z, seed, vmap_method="sequential")
        extras = method.init(z, centers, labels)
        if method.init_centers is not None:
            centers = method.init_centers(z, centers, labels)
        params = {"ae": ae_params, "centers": centers}
        state = {"params": params, "opt_state": cluster_tx.init(params), "key": key,
                 "extras": extras, "epoch": jnp.zeros((), jnp.int32),
                 "active": jnp.ones((n_clusters,), bool)}
        return state, snapshot_of(state, z)

    def cluster_epoch(state, x):
        epoch, params, active = state["epoch"], state["params"], state["active"]
        extras = method.begin_epoch(state["extras"], params["centers"], embed(params["ae"], x), epoch, active)
        updating = None if method.updates is None else method.updates(extras)
        mask = None
        if pair_weight:   # g: the tags of DDC's explanations of the current partition (host ILP)
            z_now = embed(params["ae"], x)
            labels = (method.assign(params["centers"], z_now, active) if method.partition is None
                      else method.partition(params["centers"], extras, z_now)["assignments"])
            mask = jax.pure_callback(
                lambda lab: tags_lib.explanation_mask_host(lab, np.asarray(tag_values), float(config.tags.alpha)),
                jax.ShapeDtypeStruct((tag_values.shape[1],), jnp.float32), labels, vmap_method="sequential")

        def step(carry, idx):
            params, opt_state, extras = carry
            xb = x[idx]

            def loss_fn(p):
                centers = p["centers"] if method.learn_centers else jax.lax.stop_gradient(p["centers"])
                if method.uses_decoder:
                    z, x_rec = model.apply({"params": p["ae"]}, xb)
                else:
                    z, x_rec = encode(p["ae"], xb), None
                out = method.loss(LossInputs(z, xb, x_rec, centers, extras, idx, epoch, active))
                if tag_values is None:
                    return out
                return with_tag_terms(out, p["ae"], z, idx, centers, epoch, active, mask)

            (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, new_opt_state = cluster_tx.update(grads, opt_state, params)
            if method.init_centers is None:
                # A dead center has no gradient, but Adam's momentum would still move it: it stays put.
                updates = {**updates, "centers": jnp.where(active[:, None], updates["centers"], 0.0)}
            if lr_decay != 1.0:
                updates = jax.tree.map(lambda u: u * lr_decay ** epoch.astype(u.dtype), updates)
            new_params = optax.apply_updates(params, updates)
            if updating is None:
                params, opt_state = new_params, new_opt_state
            else:   # a method that has stopped keeps its parameters and optimiser state
                params, opt_state = jax.tree.map(lambda new, old: jnp.where(updating, new, old),
                                                 (new_params, new_opt_state), (params, opt_state))
            if method.after_step is not no_center_rule:
                extras, centers = method.after_step(extras, params["centers"], encode(params["ae"], xb), idx,
                                                    active)
                params = {**params, "centers": centers}
            return (params, opt_state, extras), parts

        if method.batches is None:
            batches = epoch_batches(state["key"], CLUSTERING, epoch)
        else:
            batches = method.batches(extras, jax.random.fold_in(jax.random.fold_in(state["key"], CLUSTERING), epoch))
        (params, opt_state, extras), losses = jax.lax.scan(
            step, (params, state["opt_state"], extras), batches)
        if method.batches is None:
            (params, opt_state, extras), losses = with_last_batch(step, (params, opt_state, extras), losses,
                                                                  state["key"], CLUSTERING, epoch)
        z = embed(params["ae"], x)   # once: for the end-of-epoch rule and the snapshot
        if method.end_epoch is not None:
            key = jax.random.fold_in(jax.random.fold_in(state["key"], EPOCH_END), epoch + 1)
            extras, centers, active = method.end_epoch(EpochEnd(z, params["centers"], active, extras, epoch + 1, key))
            params = {**params, "centers": centers}
        state = {**state, "params": params, "opt_state": opt_state, "extras": extras, "epoch": epoch + 1,
                 "active": active}
        return state, {"losses": losses, **snapshot_of(state, z)}

    if parallelism == "vmap":
        def over_seeds(f, axes):
            return jax.jit(jax.vmap(f, in_axes=axes))
    else:
        def over_seeds(f, axes):
            # lax.map runs the one-seed program once per seed: bit-identical
            # results for a seed whatever the number of seeds in the launch.
            def looped(*args):
                per_seed = [a for a, ax in zip(args, axes) if ax == 0]
                shared = [a for a, ax in zip(args, axes) if ax is None]

                def one(seed_args):
                    it_seed, it_shared = iter(seed_args), iter(shared)
                    return f(*[next(it_seed) if ax == 0 else next(it_shared) for ax in axes])
                return jax.lax.map(one, per_seed)
            return jax.jit(looped)

    def train(keys, x):
        """The whole run without checkpoints, through the same compiled epoch
        functions as `train_and_evaluate`, so both give identical numbers."""
        pstate = trainer.init_pretrain(keys)
        for _ in range(int(config.pretrain.epochs)):
            pstate, _ = trainer.pretrain_epoch(pstate, x)
        kept = ("assignments", "active")   # not the embeddings: they would pile up over the epochs
        cstate, snap = trainer.init_clustering(pstate["params"], keys, x)
        history = [{name: snap[name] for name in kept}]
        for _ in range(int(config.clustering.epochs)):
            cstate, out = trainer.cluster_epoch(cstate, x)
            history.append({name: out[name] for name in kept})
        return pstate, cstate, {name: jnp.stack([h[name] for h in history], axis=1) for name in kept}

    trainer = Trainer(
        config=config, n_clusters=n_clusters,
        init_pretrain=over_seeds(init_pretrain, (0,)),
        pretrain_epoch=over_seeds(pretrain_epoch, (0, None)),
        init_clustering=over_seeds(init_clustering, (0, 0, None)),
        cluster_epoch=over_seeds(cluster_epoch, (0, None)),
        pretrain_snapshot=over_seeds(pretrain_snapshot, (0, None)),
        cluster_snapshot=over_seeds(cluster_snapshot, (0, None)),
        train=train,
        embed=over_seeds(embed, (0, None)),
    )
    return trainer


def seed_keys(config) -> jax.Array:
    """One PRNGKey per seed id: seed s is the same stream in any launch."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seed_ids(config)])


@jax.jit
def keep_finite(before, after, losses, alive):
    """`after` for the seeds still alive whose epoch losses are all finite,
    `before` (their last finite state) for the others, and the new alive mask.
    On device and exact (a select), so the healthy seeds' numbers are
    those of a launch without the diverging one."""
    finite = alive
    for loss in jax.tree.leaves(losses):
        finite = finite & jnp.isfinite(loss).reshape(loss.shape[0], -1).all(axis=1)

    def pick(new, old):
        return jnp.where(finite.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return jax.tree.map(pick, after, before), finite


def state_shapes(trainer: Trainer, keys, x, per_seed):
    """Abstract pretraining and clustering states on the seed mesh: the
    targets orbax restores onto (with optax's state types)."""
    def sharded(shapes):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=per_seed), shapes)
    pstate = sharded(jax.eval_shape(trainer.init_pretrain, keys))
    return pstate, sharded(jax.eval_shape(trainer.init_clustering, pstate["params"], keys, x)[0])
