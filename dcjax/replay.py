"""Any epoch's model state, rebuilt by replaying training from a resume point.

`checkpointing.load_state` reaches `replay_to_epoch` (by name,
`checkpointing.REPLAY_ENTRY_POINT`) when an epoch's model state was not
stored: the run's own compiled epoch functions (`dcjax.trainer`) and
divergence rule continue from the resume point before it. It imports the
builder, never the driver.
"""
import functools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from dcjax import checkpointing, data
from dcjax.sharding import place, seed_sharding, to_host
from dcjax.trainer import keep_finite, make_train, seed_keys, state_shapes


@functools.lru_cache(maxsize=1)
def _replay_setup(workdir: str, config_json: str):
    """The run's trainer and data, kept for the next replay of the same run
    (compiling is most of a short replay)."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    dataset = data.load_dataset(config.dataset)
    k = int(config.dataset.n_clusters) or dataset.n_clusters
    trainer = make_train(config, *dataset.x.shape, k)
    per_seed, replicated = seed_sharding(int(config.seeds))
    return config, trainer, place(dataset.x, replicated), per_seed


def replay_to_epoch(workdir: Path, phase: str, start_epoch: int, read_start, epoch: int) -> dict:
    """checkpointing.REPLAY_ENTRY_POINT: the model state (numpy) of `epoch`,
    trained from the resume point at `start_epoch` (`read_start(abstract
    state)` reads it; None: the initial pretraining state) through the run's
    own compiled epoch functions and divergence rule, as `train_and_evaluate`
    trained it. On the same device layout it is the same program on the same
    inputs: bit-identical (tested, loop and vmap). On another (e.g. a run
    sharded over 4 devices, replayed on 1) vmapped seeds agree to float
    round-off, as any launch with another number of seeds per device does
    (README, Reproducibility)."""
    config, trainer, x, per_seed = _replay_setup(str(workdir), (Path(workdir) / "config.json").read_text())
    keys = place(seed_keys(config), per_seed)
    if read_start is None:
        state = trainer.init_pretrain(keys)
    else:
        state = read_start(state_shapes(trainer, keys, x, per_seed)[phase == "clustering"])
    epoch_fn = trainer.pretrain_epoch if phase == "pretrain" else trainer.cluster_epoch
    alive = place(checkpointing.alive_at(Path(workdir), phase, start_epoch, int(config.seeds)), per_seed)
    for _ in range(start_epoch, epoch):
        new_state, out = epoch_fn(state, x)
        state, alive = keep_finite(state, new_state, out["losses"], alive)
    return jax.tree.map(np.asarray, to_host(checkpointing.model_state(state)))
