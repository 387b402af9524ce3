"""Faults on purpose, for the tests and experiments/fault_injection.py:
what a test needs to make a run go wrong in a known way. Nothing in dcjax
imports this module."""
import dataclasses

import jax
import jax.numpy as jnp


def poisoned(make_train, index: int, from_epoch: int):
    """`make_train` whose trainers give seed `index` NaN weights in clustering
    epoch `from_epoch` and later: a seed that diverges, the others untouched
    (tests/test_faults.py and experiments/fault_injection.py)."""
    def patched(*args, **kw):
        trainer = make_train(*args, **kw)
        clean = trainer.cluster_epoch

        def cluster_epoch(state, x):
            bad = (jnp.arange(state["epoch"].shape[0]) == index) & (state["epoch"] + 1 >= from_epoch)
            params = jax.tree.map(lambda p: jnp.where(bad.reshape((-1,) + (1,) * (p.ndim - 1)), jnp.nan, p),
                                  state["params"])
            return clean({**state, "params": params}, x)
        return dataclasses.replace(trainer, cluster_epoch=cluster_epoch)
    return patched


def infinite_loss(make_train, index: int, from_epoch: int):
    """`make_train` whose trainers report a +inf loss for seed `index` from
    clustering epoch `from_epoch` on (a learning rate far too high overflows
    to +inf, not NaN): the driver freezes that seed, and its records hold
    Infinity (experiments/fault_injection.py's +inf row)."""
    def patched(*args, **kw):
        trainer = make_train(*args, **kw)
        clean = trainer.cluster_epoch

        def cluster_epoch(state, x):
            new_state, out = clean(state, x)
            bad = (jnp.arange(state["epoch"].shape[0]) == index) & (state["epoch"] + 1 >= from_epoch)
            losses = jax.tree.map(lambda v: jnp.where(bad.reshape((-1,) + (1,) * (v.ndim - 1)), jnp.inf, v),
                                  out["losses"])
            return new_state, {**out, "losses": losses}
        return dataclasses.replace(trainer, cluster_epoch=cluster_epoch)
    return patched
