"""Is a dcjax epoch on CPU bound by the autoencoder's matmuls? The probes
behind the notes of experiments/results/bench_vs_clustpy.md.

    python experiments/probe_matmul_bound.py                 # DEC loss vs a dummy loss
    XLA_FLAGS=--xla_cpu_use_xnnpack=true python experiments/probe_matmul_bound.py --epochs-only
    python experiments/probe_matmul_bound.py --parallelism --seeds 1,4
    python experiments/probe_matmul_bound.py --hlo

1. A USPS epoch of encoder forward/backward + Adam at batch 256, once with
   DEC's loss (Student-t soft assignments, target distribution, KL) and once
   with a dummy loss (mean of z²): if the two take the same time, the loss
   itself costs nothing and the epoch is the encoder's matmuls.
2. (--epochs-only) The pretraining and DEC epochs of `dcjax.train` without
   the snapshot embedding, as bench_vs_clustpy.py times them 'training only':
   run it under different XLA_FLAGS to compare XLA CPU settings.
3. (--parallelism) The same epochs for 1, 4, ... seeds in one launch under
   seed_parallelism 'vmap' and 'loop'.
4. (--hlo) The transpose, copy and dot ops in XLA's optimised program of the
   1-seed pretraining epoch under each setting: under vmap XLA lays out the
   weight gradients transposed, and Adam pays transposes every step.
Medians of 4 timed epochs after a compiling one, seconds per epoch.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dcjax import data, train
from dcjax.config import make_config
from dcjax.methods.dec import kl_divergence, student_t, target_distribution
from dcjax.models import make_autoencoder


def median_seconds(fn, *args, repeats: int = 4) -> float:
    jax.block_until_ready(fn(*args))   # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def loss_probe(x, config):
    n, d = x.shape
    model = make_autoencoder(d, config.model)
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    tx = optax.adam(config.clustering.learning_rate)
    batches = jnp.arange((n // 256) * 256).reshape(-1, 256)
    centers = jax.random.normal(jax.random.PRNGKey(1), (10, config.model.embedding_dim))

    def epoch(params, opt_state, loss_kind):
        def step(carry, idx):
            p, o = carry

            def loss_fn(p):
                z = model.apply({"params": p}, x[idx], method=model.encode)
                if loss_kind == "dummy":
                    return jnp.mean(z ** 2)
                q = student_t(z, centers, 1.0)
                return kl_divergence(jax.lax.stop_gradient(target_distribution(q)), q)

            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss
        return jax.lax.scan(step, (params, opt_state), batches)

    for kind in ("dummy", "dec", "dummy", "dec"):
        fn = jax.jit(lambda p, o, kind=kind: epoch(p, o, kind))
        print(f"encoder epoch with {kind} loss: {median_seconds(fn, params, tx.init(params)):.3f} s")


def training_only(epoch_fn):
    """The epoch without its snapshot: outputs nobody reads are dead code to XLA."""
    return jax.jit(lambda s, xx: (lambda new, out: (new, out["losses"]))(*epoch_fn(s, xx)))


def epochs_probe(x, config, k: int, label: str = ""):
    trainer = train.make_train(config, *x.shape, k)
    keys = train.seed_keys(config)
    pstate = trainer.init_pretrain(keys)
    seconds = median_seconds(training_only(trainer.pretrain_epoch), pstate, x)
    print(f"{label}pretraining epoch, training only: {seconds:.3f} s")
    cstate, _ = trainer.init_clustering(pstate["params"], keys, x)
    seconds = median_seconds(training_only(trainer.cluster_epoch), cstate, x)
    print(f"{label}DEC epoch, training only: {seconds:.3f} s")


def hlo_probe(x, config, k: int):
    import re
    for mode in ("vmap", "loop"):
        config.seeds, config.seed_parallelism = 1, mode
        trainer = train.make_train(config, *x.shape, k)
        state = trainer.init_pretrain(train.seed_keys(config))
        compiled = training_only(trainer.pretrain_epoch).lower(state, x).compile()
        ops = re.findall(r"= \S+ (\w+)\(", compiled.as_text())
        print(f"{mode}: {ops.count('transpose')} transpose, {ops.count('copy')} copy, {ops.count('dot')} dot ops "
              "in the optimised pretraining epoch")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs-only", action="store_true", help="only probe 2 (dcjax's own epochs)")
    ap.add_argument("--parallelism", action="store_true", help="only probe 3 (vmap vs loop over seeds)")
    ap.add_argument("--seeds", default="1,4", help="seeds per launch for --parallelism")
    ap.add_argument("--hlo", action="store_true", help="only probe 4 (ops in the compiled epoch)")
    args = ap.parse_args()
    config = make_config("dec", "usps")
    dataset = data.load_dataset(config.dataset)
    x = jnp.asarray(dataset.x)
    if args.hlo:
        hlo_probe(x, config, dataset.n_clusters)
        return
    if args.parallelism:
        for seeds in map(int, args.seeds.split(",")):
            for mode in ("vmap", "loop"):
                config.seeds, config.seed_parallelism = seeds, mode
                epochs_probe(x, config, dataset.n_clusters, f"{seeds} seed(s), {mode}: ")
        return
    if not args.epochs_only:
        loss_probe(x, config)
    epochs_probe(x, config, dataset.n_clusters)


if __name__ == "__main__":
    main()
