"""Everything that touches orbax, and the reader used by notebooks and tools.

A run's workdir holds, per phase (`pretrain`, `clustering`):

    <phase>/epochs/<epoch>/      one orbax item per epoch, {'state': ..., 'snapshot': ...}:
                                 the model state (params and centers, method
                                 state, seed keys; no optimiser) and the snapshot
                                 below. The default, when every epoch is kept:
                                 one save instead of two costs less CPU (USPS,
                                 2 cores: 0.068 s instead of 0.081 s per epoch,
                                 experiments/probe_save_cost.py).
    <phase>/state/<epoch>/       instead of epochs/, when retention is asked for
    <phase>/snapshots/<epoch>/   (`max_to_keep` > 0): the model state and the
                                 snapshot as separate items, so that orbax's
                                 retention (`max_to_keep`, `keep_period`, epochs
                                 a selector asked for) prunes states while every
                                 snapshot stays. Runs written before epochs/
                                 existed have this layout too; both are read.
    <phase>/resume/<epoch>/      the full training state, optimiser included, every
                                 `resume_every` epochs and at the phase's last
                                 epoch; the newest two are kept. A killed run
                                 resumes from the newest and replays the epochs
                                 after it (training is deterministic, so the
                                 replay gives the same numbers). Writing the
                                 optimiser's two moments only every few epochs
                                 cuts the bytes saved per epoch by about 3x.
    snapshot                     what rebuilds that epoch's clustering without
                                 the network: full-data embedding, and in the
                                 clustering phase hard assignments, centers and
                                 cluster sizes. Always kept: epoch selection reads it.
    <phase>/records.jsonl        one line per epoch: loss components per batch and
                                 per epoch, cluster sizes, seconds — for every seed.

Every array has the seed axis first. Clustering epoch 0 is the k-means
initialisation on the pretrained embedding.
"""
import contextlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

PHASES = ("pretrain", "clustering")
OPTIMIZER = "opt_state"   # the part of a training state that only resuming needs
RESUME_KEEP = 2           # resume points kept: the newest survives a kill during the next save
JOINT = "epochs"          # the directory of the one-item-per-epoch layout


def model_state(state: dict) -> dict:
    """A training state without its optimiser: what state/<epoch> holds."""
    return {k: v for k, v in state.items() if k != OPTIMIZER}


def _options(max_to_keep: int = 0, keep_period: int = 0, keep_epochs=(), read_only: bool = False):
    # One place builds the options, so writer and reader always agree on the
    # step directory format (a mismatch makes orbax see no steps at all).
    # With max_to_keep = 0 every epoch is kept. Otherwise orbax keeps the
    # newest `max_to_keep`, every `keep_period`-th, and the epochs a selector
    # asked for (keep_epochs.json); its preservation policies express that union.
    preservation = None
    if max_to_keep:
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(n=max_to_keep),
            *([policies.EveryNSteps(interval_steps=keep_period)] if keep_period else []),
            policies.CustomSteps(steps=sorted(keep_epochs))])
    return ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
        step_format_fixed_length=None)


def _manager(directory: Path, compress: bool = False, **kw) -> ocp.CheckpointManager:
    # The handler is named so that a reader gets the item's metadata (shapes).
    # Orbax compresses with zstd by default: on a 2-core machine that costs
    # ~0.1 s per USPS state save, more than the rest of the save, while float
    # weights shrink only ~25%. Off unless `checkpoint.compress` asks for it.
    return ocp.CheckpointManager(directory.absolute(), options=_options(**kw),
                                 item_handlers=ocp.PyTreeCheckpointHandler(use_compression=compress))


def _save_args(tree) -> ocp.args.PyTreeSave:
    return ocp.args.PyTreeSave(tree)


def _restore_args(target) -> ocp.args.PyTreeRestore:
    return ocp.args.PyTreeRestore(item=target,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def _local_target(manager: ocp.CheckpointManager, step: int):
    """An abstract target from the checkpoint's own metadata, on one local
    device: a run saved sharded over several devices reads anywhere."""
    meta = manager.item_metadata(step)
    meta = getattr(meta, "tree", meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)


def _restore(manager: ocp.CheckpointManager, step: int, target, part: str | None = None):
    """The arrays `target` names, from a whole item or from its `part`
    ('state', 'snapshot') of a joint item. Orbax's partial restore reads only
    those arrays, so a target may be a subset of what is on disk: e.g. the
    model state of a run whose final 'state' item also holds the optimiser."""
    item = target if part is None else {part: target}
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
    return restored if part is None else restored[part]


def _restore_numpy(manager: ocp.CheckpointManager, step: int, part: str | None = None):
    target = _local_target(manager, step)
    return jax.tree.map(np.asarray, _restore(manager, step, target if part is None else target[part], part))


class PhaseCheckpoints:
    """Writes and resumes one phase of a run. Saves are asynchronous."""

    def __init__(self, workdir: Path, phase: str, max_to_keep: int = 0, keep_period: int = 0,
                 compress: bool = False, resume_every: int = 1):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if resume_every < 1:
            raise ValueError(f"resume_every must be >= 1, got {resume_every}")
        self.root = Path(workdir) / phase
        if (self.root / "state").exists() and not (self.root / "resume").exists():
            raise ValueError(f"{self.root} was written by dcjax before resume points existed (its full "
                             "states are in state/, there is no resume/): continue it with that version, "
                             "or start a new --workdir")
        self.resume_every = resume_every
        # A run keeps the layout it was started with.
        if max_to_keep and (self.root / JOINT).exists():
            raise ValueError(f"{self.root} was started keeping every epoch (one item per epoch in {JOINT}/); "
                             "retention (checkpoint.max_to_keep) cannot be turned on while continuing it")
        self.joint = max_to_keep == 0 and not (self.root / "snapshots").exists()
        if self.joint and (self.root / "state").exists():
            raise ValueError(f"{self.root} holds per-epoch states in state/ but no snapshots/; "
                             "it was not written by this version of dcjax")
        if self.joint:
            self.epochs = _manager(self.root / JOINT, compress=compress)
            self.state = self.snapshots = None
        else:
            self.epochs = None
            self.state = _manager(self.root / "state", max_to_keep=max_to_keep, keep_period=keep_period,
                                  keep_epochs=kept_epochs(workdir, phase), compress=compress)
            self.snapshots = _manager(self.root / "snapshots", compress=compress)
        self.resume = _manager(self.root / "resume", max_to_keep=RESUME_KEEP, compress=compress)
        self.records_path = self.root / "records.jsonl"

    def save(self, epoch: int, state: Any, snapshot: dict, record: dict | None, last: bool = False):
        """Everything of one epoch; the full state too when `epoch` is a resume
        point (a multiple of resume_every, or the phase's `last` epoch)."""
        # The record goes first: a state that exists always has its record.
        if record is not None:
            with open(self.records_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        self._write_epoch(epoch, state, lambda: snapshot)
        if last or epoch % self.resume_every == 0:
            self.resume.save(epoch, args=_save_args(state))

    def latest_epoch(self) -> int | None:
        """The newest resume point."""
        return self.resume.latest_step()

    def restore(self, epoch: int, abstract_state: Any) -> Any:
        return self.resume.restore(epoch, args=_restore_args(abstract_state))

    def _write_epoch(self, epoch: int, state: Any, snapshot_fn, model: bool = True, snapshot: bool = True):
        """An epoch's model state and/or snapshot, in this run's layout (the
        joint item always holds both)."""
        if self.joint:
            self.epochs.save(epoch, args=_save_args({"state": model_state(state), "snapshot": snapshot_fn()}))
            return
        if snapshot:
            self.snapshots.save(epoch, args=_save_args(snapshot_fn()))
        if model:
            self.state.save(epoch, args=_save_args(model_state(state)))

    def ensure_epoch(self, epoch: int, state: Any, snapshot_fn):
        """Write the model state and snapshot of a resume point's epoch if a
        kill lost them (they are written after the resume point's state)."""
        if self.joint:
            if epoch not in self.epochs.all_steps():
                self._write_epoch(epoch, state, snapshot_fn)
            return
        model, snapshot = epoch not in self.state.all_steps(), epoch not in self.snapshots.all_steps()
        if model or snapshot:
            self._write_epoch(epoch, state, snapshot_fn, model=model, snapshot=snapshot)

    def _managers(self):
        return [m for m in (self.epochs, self.snapshots, self.state, self.resume) if m is not None]

    def discard_after(self, epoch: int):
        """Forget what a killed run wrote past the resume point it restarts from."""
        for manager in self._managers():
            for step in manager.all_steps():
                if step > epoch:
                    manager.delete(step)
        if self.records_path.exists():
            kept = [line for line in self.records_path.read_text().splitlines()
                    if line and json.loads(line)["epoch"] <= epoch]
            self.records_path.write_text("".join(line + "\n" for line in kept))

    def wait(self):
        for manager in self._managers():
            manager.wait_until_finished()

    def close(self):
        for manager in self._managers():
            manager.close()


def kept_epochs(workdir, phase: str) -> list[int]:
    """Epochs whose full state retention must keep (written by dcjax.select)."""
    path = Path(workdir) / "keep_epochs.json"
    return [int(e) for e in json.loads(path.read_text()).get(phase, [])] if path.exists() else []


# ----------------------------------------------------------------------------
# Reading a run (notebooks, evaluation, selection). Everything comes back as numpy.

_PARTS = {"snapshots": "snapshot", "state": "state"}   # kind -> its part of a joint item


def _location(workdir, phase: str, kind: str) -> tuple[Path, str | None]:
    """Where `kind` lives, and the part of its items to read (None: the whole
    item): epochs/ in the joint layout, else `kind`/."""
    root = Path(workdir) / phase
    if kind in _PARTS and (root / JOINT).exists():
        return root / JOINT, _PARTS[kind]
    return root / kind, None


def _reader(workdir, phase: str, kind: str) -> tuple[ocp.CheckpointManager, str | None]:
    """A read-only manager for `kind`, and the part of its items to read."""
    path, part = _location(workdir, phase, kind)
    if not path.exists():
        raise FileNotFoundError(f"no {kind} for phase {phase!r} in {workdir}")
    return _manager(path, read_only=True), part


def epoch_dir(workdir, epoch: int, phase: str = "clustering", kind: str = "snapshots") -> Path:
    """The orbax directory that holds an epoch's snapshot or model state
    (both the same directory in the joint layout)."""
    return _location(workdir, phase, kind)[0] / str(epoch)


def list_epochs(workdir, phase: str = "clustering", kind: str = "snapshots") -> list[int]:
    """Epochs that have a snapshot (kind='snapshots'), a model state
    (kind='state') or a full training state to resume from (kind='resume')."""
    manager, _ = _reader(workdir, phase, kind)
    with manager as m:
        return sorted(m.all_steps())


def load_snapshot(workdir, epoch: int, phase: str = "clustering") -> dict[str, np.ndarray]:
    """{'embedding': (S, N, e), 'assignments': (S, N), 'centers': (S, k, e), ...}"""
    manager, part = _reader(workdir, phase, "snapshots")
    with manager as m:
        return _restore_numpy(m, epoch, part)


@contextlib.contextmanager
def snapshot_reader(workdir, phase: str = "clustering"):
    """`with snapshot_reader(w) as load: load(epoch)`: one orbax reader kept
    open, since opening one costs most of a small snapshot's load time."""
    manager, part = _reader(workdir, phase, "snapshots")
    with manager as m:
        yield lambda epoch: _restore_numpy(m, epoch, part)


def load_state(workdir, epoch: int, phase: str = "clustering", target: Any = None, kind: str = "state") -> dict:
    """The model state of an epoch: params (['params']['ae'] in the clustering
    phase, ['params'] in pretraining), centers (['params']['centers']), method
    state, seed keys. kind='resume' reads a resume point instead: the same
    plus the optimiser ('opt_state'). Without `target` (an abstract pytree)
    everything comes back as numpy."""
    if kind not in ("state", "resume"):
        raise ValueError(f"kind must be 'state' or 'resume', got {kind!r}")
    manager, part = _reader(workdir, phase, kind)
    with manager as m:
        if target is None:
            return _restore_numpy(m, epoch, part)
        return _restore(m, epoch, target, part)


def load_records(workdir, phase: str = "clustering") -> list[dict]:
    path = Path(workdir) / phase / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def load_config(workdir):
    """The run's config as an ml_collections.ConfigDict."""
    import ml_collections
    return ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
