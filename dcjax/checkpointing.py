"""Everything that touches orbax, and the reader used by notebooks and tools.

A run's workdir holds, per phase (`pretrain`, `clustering`):

    <phase>/snapshot_blocks/<epoch>/
                                 every epoch's snapshot: what rebuilds that epoch's
                                 clustering without the network: full-data
                                 embedding, and in the clustering phase hard
                                 assignments, centers and cluster sizes. Epoch
                                 selection reads it. One orbax item holds the
                                 epochs since the previous resume point (an
                                 `epochs` array and every snapshot array with an
                                 epoch axis first), named by its last epoch: one
                                 save per resume point, not per epoch (orbax's
                                 fixed cost, ~23 ms of CPU per save, was 7x a bare
                                 GPU epoch). Runs written before blocks have
                                 <phase>/snapshots/<epoch>/, one item per epoch;
                                 both are read (`snapshot_reader`).
    <phase>/resume/<epoch>/      the full training state (params and centers, method
                                 state, seed keys, optimiser) every `resume_every`
                                 epochs and at the phase's last epoch. Kept: the
                                 newest two (a kill or a damaged file in the newest
                                 leaves the one before), and for good every
                                 `keep_resume_every`-th epoch's. A killed run
                                 resumes from the newest intact one and replays the
                                 epochs after it.
    <phase>/records.jsonl        one line per epoch: loss components per batch and
                                 per epoch, cluster sizes, seconds, which seeds
                                 diverged — for every seed.

The model state of any epoch comes back from `load_state`: read where it is
stored (a resume point), else rebuilt by replaying the deterministic training
from the newest resume point before it (see "Replay" below). That is the
default (`checkpoint.model_states='replay'`) because a model state is ~150x a
snapshot on digits: keeping one per epoch made the README's first command
write 2.76 GB, and selection needs only the snapshots.

`checkpoint.model_states='every_epoch'` (or any `max_to_keep` > 0, as before)
also stores every epoch's model state (no optimiser):

    <phase>/epochs/<epoch>/      without retention: one item per epoch,
                                 {'state': ..., 'snapshot': ...}; one save instead
                                 of two costs less CPU (USPS, 2 cores: 0.068 s
                                 instead of 0.081 s per epoch,
                                 experiments/probe_save_cost.py). It replaces
                                 snapshots/.
    <phase>/state/<epoch>/       with retention (`max_to_keep` > 0), beside
                                 snapshots/: orbax prunes states (`max_to_keep`,
                                 `keep_period`, epochs a selector asked for) while
                                 every snapshot stays.

A run keeps the layout it was started with; all three are read.

Faults. Orbax writes an item into a temporary directory and renames it when
complete, so a kill or a full disk leaves complete items and temporaries that
readers ignore and the next writer removes. An item that exists but cannot be
read back (a truncated or deleted file) raises `DamagedCheckpointError` from
every reader here, never returns data; resuming skips a damaged resume point
for the one before it. A save that would not fit on the disk raises
`DiskFullError` before it writes.

Every array has the seed axis first. Clustering epoch 0 is the k-means
initialisation on the pretrained embedding.
"""
import contextlib
import errno
import hashlib
import zlib
import importlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)

PHASES = ("pretrain", "clustering")
OPTIMIZER = "opt_state"   # the part of a training state that only resuming needs
RESUME_KEEP = 2           # newest resume points kept: one damaged or half-written leaves the one before
RUN_FILE = "run.json"     # what training resolved at its start (`write_run_facts`); dcjax.run reads it
JOINT = "epochs"          # the directory of the one-item-per-epoch layout
BLOCKS = "snapshot_blocks"  # the directory of the snapshots, one item per run of epochs up to a resume point
LAYOUTS = ("blocks", "replay", "joint", "split")   # snapshot_blocks/ only; snapshots/ only (before blocks); epochs/; state/ + snapshots/
MODEL_STATES = ("replay", "every_epoch")
# Bytes orbax adds to an item besides its arrays (metadata files): measured with
# du -sb on the digits run, 26.6 kB for a 1-array snapshot, 29.5 kB for 4
# arrays, 66-72 kB for resume points of 38-51 arrays.
ITEM_OVERHEAD, ARRAY_OVERHEAD = 25_000, 1_000

# Replay: rebuilding a pruned epoch needs the trainer, and checkpointing knows
# nothing of the loop. So the dependency goes through one named entry point,
# imported only when an epoch is not stored: `replay(workdir, phase,
# start_epoch, read_start, epoch)` reads the full training state of the resume
# point at `start_epoch` with `read_start(abstract_state)` (None: start from
# the phase's initial state), trains to `epoch` exactly as the run did, and
# returns that epoch's model state (numpy). Checkpointing does the disk (which
# resume point; a damaged one is skipped for the one before); the trainer
# does the compute, and supplies the abstract target that restores optax's
# state types. Importing dcjax.train at the top instead would make this leaf
# module, which evaluate, selection and notebooks import, pull in the loop,
# the methods and the data loaders for every stored read.
REPLAY_ENTRY_POINT = "dcjax.replay:replay_to_epoch"


class DamagedCheckpointError(RuntimeError):
    """An epoch's item is on disk but cannot be read back (a truncated or missing file)."""


class DiskFullError(OSError):
    """The disk holding the workdir cannot take the next save."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self):
        return self.strerror


def model_state(state: dict) -> dict:
    """A training state without its optimiser: what a per-epoch state holds."""
    return {k: v for k, v in state.items() if k != OPTIMIZER}


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or shape structs) of a pytree."""
    return int(sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)))


def item_bytes(tree) -> int:
    """What saving `tree` as one uncompressed orbax item takes on disk (estimate)."""
    return tree_bytes(tree) + ITEM_OVERHEAD + ARRAY_OVERHEAD * len(jax.tree.leaves(tree))


def _options(max_to_keep: int = 0, keep_period: int = 0, keep_epochs=(), newest: int = 0,
             read_only: bool = False, barrier_prefix: str | None = None):
    # One place builds the options, so writer and reader always agree on the
    # step directory format (a mismatch makes orbax see no steps at all).
    # Per-epoch states: with max_to_keep = 0 every epoch is kept. Otherwise orbax
    # keeps the newest `max_to_keep`, every `keep_period`-th, and the epochs a
    # selector asked for (keep_epochs.json). Resume points: the `newest` ones and
    # every `keep_period`-th. Orbax's preservation policies express these unions.
    preservation = None
    if max_to_keep or newest:
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(n=max_to_keep or newest),
            *([policies.EveryNSteps(interval_steps=keep_period)] if keep_period else []),
            policies.CustomSteps(steps=sorted(keep_epochs))])
    # Under jax.distributed orbax syncs the processes with barriers named by
    # the step; the managers of one phase save the same step concurrently, so
    # each gets its own prefix (else: "Barrier _async_commit_complete.3 is
    # already ongoing").
    return ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
        step_format_fixed_length=None,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=barrier_prefix))


def _manager(directory: Path, compress: bool = False, **kw) -> ocp.CheckpointManager:
    # The handler is named so that a reader gets the item's metadata (shapes).
    # Orbax compresses with zstd by default: on a 2-core machine that costs
    # ~0.1 s per USPS state save, more than the rest of the save, while float
    # weights shrink only ~25%. Off unless `checkpoint.compress` asks for it.
    return ocp.CheckpointManager(directory.absolute(),
                                 options=_options(barrier_prefix=f"{directory.parent.name}_{directory.name}", **kw),
                                 item_handlers=ocp.PyTreeCheckpointHandler(use_compression=compress))


def _save_args(tree) -> ocp.args.PyTreeSave:
    return ocp.args.PyTreeSave(tree)


def _restore_args(target) -> ocp.args.PyTreeRestore:
    return ocp.args.PyTreeRestore(item=target,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def _local_target(manager: ocp.CheckpointManager, step: int):
    """An abstract target from the checkpoint's own metadata, on one local
    device: a run saved sharded over several devices or processes reads anywhere."""
    meta = manager.item_metadata(step)
    meta = getattr(meta, "tree", meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)


def _restore(manager: ocp.CheckpointManager, step: int, target, part: str | None = None):
    """The arrays `target` names, from a whole item or from its `part`
    ('state', 'snapshot') of a joint item. Orbax's partial restore reads only
    those arrays, so a target may be a subset of what is on disk: e.g. the
    model state of a resume point, without its optimiser."""
    item = target if part is None else {part: target}
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
    return restored if part is None else restored[part]


def _restore_numpy(manager: ocp.CheckpointManager, step: int, part: str | None = None, model_only=False):
    target = _local_target(manager, step)
    target = target if part is None else target[part]
    if model_only:
        target = model_state(target)
    return jax.tree.map(np.asarray, _restore(manager, step, target, part))


CHECKSUMS = "dcjax_checksums.json"   # in each finished item's folder: the CRC-32 of each of its files


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _item_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(step_dir: Path) -> None:
    """Seal a finished item: the CRC-32 of every file in it. Orbax checks an
    item's structure, not its bytes: 64 bytes overwritten in place are read
    back as numbers. CRC-32 (not a cryptographic hash): it is for damage, and
    it costs ~10 ms per 30 MB."""
    manifest = {str(p.relative_to(step_dir)): _crc32(p) for p in _item_files(step_dir)}
    write_text_atomic(step_dir / CHECKSUMS, json.dumps(manifest))


def verify_checksums(step_dir: Path) -> None:
    """Raise ValueError where a sealed item's files differ from its manifest
    (an item without one, written before dcjax sealed items or cut short by
    a kill before sealing, is read as it is)."""
    path = step_dir / CHECKSUMS
    if not path.exists():
        return
    manifest = json.loads(path.read_text())
    for name, crc in manifest.items():
        file = step_dir / name
        if not file.exists():
            raise ValueError(f"{name} is missing (the item's checksum manifest lists it)")
        if _crc32(file) != crc:
            raise ValueError(f"{name} does not match its checksum (changed on disk after it was written)")


def _seal(manager: ocp.CheckpointManager) -> None:
    """Write the checksums of the manager's finished items that have none.
    Call only when no save of this manager is in flight."""
    if not _is_primary():
        return
    for step in manager.all_steps():
        step_dir = Path(manager.directory) / str(step)
        if step_dir.is_dir() and not (step_dir / CHECKSUMS).exists():
            write_checksums(step_dir)


def _checked(manager: ocp.CheckpointManager, step: int, what: str, read, epoch: int | None = None):
    """`read()`, with an absent epoch a FileNotFoundError and an unreadable
    one a DamagedCheckpointError. Orbax and tensorstore fail in many ways on a
    damaged item (OUT_OF_RANGE, NOT_FOUND, a JSON error, a TypeError on missing
    metadata), so anything raised while reading an item that is there counts."""
    if step not in manager.all_steps():
        raise FileNotFoundError(f"no {what} for epoch {step} in {manager.directory}")
    try:
        verify_checksums(Path(manager.directory) / str(step))
        return read()
    except Exception as e:   # noqa: BLE001 -- see the docstring
        cause = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        where = f"epoch {step}" if epoch is None else f"epoch {epoch} (in the item of epochs up to {step})"
        raise DamagedCheckpointError(f"the {what} of {where} ({manager.directory / str(step)}) is damaged "
                                     f"and was not read: {type(e).__name__}: {cause}") from e


def _layout_on_disk(root: Path) -> str | None:
    if (root / JOINT).exists():
        return "joint"
    if (root / "state").exists():
        return "split"
    if (root / BLOCKS).exists():
        return "blocks"
    if (root / "snapshots").exists():
        return "replay"
    return None


def _block_epochs(manager: ocp.CheckpointManager, step: int) -> list[int]:
    """The epochs of the block item `step` (its last epoch), from the item's
    metadata: the length of its `epochs` array, without reading arrays."""
    meta = manager.item_metadata(step)
    meta = getattr(meta, "tree", meta)
    n = int(meta["epochs"].shape[0])
    return list(range(step - n + 1, step + 1))


def _stack_block(snapshots: list[dict]) -> dict:
    """One item from several epochs' snapshots: each array gains an epoch axis first."""
    import jax.numpy as jnp
    return jax.tree.map(lambda *arrays: jnp.stack(arrays), *snapshots)


def _is_primary() -> bool:
    """One process writes the plain files (records); orbax coordinates its own."""
    return jax.process_index() == 0


class PhaseCheckpoints:
    """Writes and resumes one phase of a run. Saves are asynchronous."""

    def __init__(self, workdir: Path, phase: str, max_to_keep: int = 0, keep_period: int = 0,
                 compress: bool = False, resume_every: int = 1, model_states: str = "replay",
                 keep_resume_every: int = 0):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if resume_every < 1:
            raise ValueError(f"resume_every must be >= 1, got {resume_every}")
        if model_states not in MODEL_STATES:
            raise ValueError(f"checkpoint.model_states must be one of {MODEL_STATES}, got {model_states!r}")
        self.root = Path(workdir) / phase
        if (self.root / "state").exists() and not (self.root / "resume").exists():
            raise ValueError(f"{self.root} was written by dcjax before resume points existed (its full "
                             "states are in state/, there is no resume/): continue it with that version, "
                             "or start a new --workdir")
        self.resume_every = resume_every
        on_disk = _layout_on_disk(self.root)
        # A run keeps the layout it was started with.
        if max_to_keep and on_disk == "joint":
            raise ValueError(f"{self.root} was started keeping every epoch (one item per epoch in {JOINT}/); "
                             "retention (checkpoint.max_to_keep) cannot be turned on while continuing it")
        wanted = "split" if max_to_keep else ("joint" if model_states == "every_epoch" else "blocks")
        self.layout = on_disk or wanted
        self.epochs = self.state = self.snapshots = self.blocks = None
        self._block = []   # (epoch, snapshot, record) of the epochs since the last block
        if self.layout == "joint":
            self.epochs = _manager(self.root / JOINT, compress=compress)
        elif self.layout == "blocks":
            self.blocks = _manager(self.root / BLOCKS, compress=compress)
        else:
            self.snapshots = _manager(self.root / "snapshots", compress=compress)
        if self.layout == "split":
            self.state = _manager(self.root / "state", max_to_keep=max_to_keep, keep_period=keep_period,
                                  keep_epochs=kept_epochs(workdir, phase), compress=compress)
        self.keep_resume_every = keep_resume_every
        self.resume = _manager(self.root / "resume", newest=RESUME_KEEP, keep_period=keep_resume_every,
                               compress=compress)
        self.records_path = self.root / "records.jsonl"

    @classmethod
    def from_settings(cls, workdir: Path, phase: str, settings) -> "PhaseCheckpoints":
        """From a config's `checkpoint` section."""
        return cls(workdir, phase, max_to_keep=int(settings.max_to_keep), keep_period=int(settings.keep_period),
                   compress=bool(settings.get("compress", False)), resume_every=int(settings.get("resume_every", 1)),
                   model_states=str(settings.get("model_states", "replay")),
                   keep_resume_every=int(settings.get("keep_resume_every", 0)))

    def is_resume_point(self, epoch: int, last: bool = False) -> bool:
        return last or epoch % self.resume_every == 0

    def save(self, epoch: int, state: Any, snapshot: dict, record: dict | None, last: bool = False):
        """Everything of one epoch; the full state too when `epoch` is a resume
        point (a multiple of resume_every, or the phase's `last` epoch). In the
        blocks layout the snapshot and record wait in memory until the next
        resume point, which writes them as one item, then the resume point:
        a resume point on disk always has every snapshot and record before
        it. Synchronous: the caller (the EpochWriter's thread) is off the
        training loop. Raises a failed earlier save's error, and DiskFullError
        before writing what the disk cannot take."""
        for manager in self._managers():   # an asynchronous save that failed stops the run here
            manager.check_for_errors()
        resume = self.is_resume_point(epoch, last)
        self._check_room(item_bytes(snapshot) * (1 + len(self._block))
                         + (item_bytes(model_state(state)) if self.layout in ("joint", "split") else 0)
                         + (item_bytes(state) if resume else 0), epoch)
        if self.layout == "blocks":
            self._block.append((epoch, snapshot, record))
            if resume:
                self._write_block()
        else:
            # The record goes first: a state that exists always has its record.
            self._append_records([record])
            self._write_epoch(epoch, state, lambda: snapshot)
        if resume:   # sealed at once: a killed run resumes from its newest resume point, so that one must be checked
            self._sealed_save(self.resume, epoch, state)
            self.resume.wait_until_finished()
            _seal(self.resume)

    def _append_records(self, records):
        records = [r for r in records if r is not None]
        if records and _is_primary():
            with open(self.records_path, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))

    def _write_block(self):
        """The buffered epochs: their records, then their snapshots as one item, sealed."""
        if not self._block:
            return
        epochs, snapshots, records = zip(*self._block)
        self._append_records(records)
        block = _stack_block(list(snapshots))
        block["epochs"] = np.asarray(epochs, np.int64)
        self._sealed_save(self.blocks, epochs[-1], block)
        self.blocks.wait_until_finished()
        _seal(self.blocks)
        self._block = []

    def _check_room(self, nbytes: int, epoch: int):
        # Twice the item: asynchronous saves still in flight have not taken their space yet.
        free = shutil.disk_usage(self.root.parent).free
        if free < 2 * nbytes:
            raise DiskFullError(f"{free / 1e6:.1f} MB free on the disk holding {self.root.parent}, and the "
                                f"{self.root.name} epoch {epoch} checkpoint needs {nbytes / 1e6:.1f} MB; "
                                "nothing of that epoch was written")

    def resume_epochs(self) -> list[int]:
        """The resume points on disk, oldest first."""
        return sorted(self.resume.all_steps())

    def latest_epoch(self) -> int | None:
        """The newest resume point."""
        return self.resume.latest_step()

    def restore(self, epoch: int, abstract_state: Any) -> Any:
        """The full training state of a resume point; DamagedCheckpointError if unreadable."""
        return _checked(self.resume, epoch, f"{self.root.name} resume point",
                        lambda: self.resume.restore(epoch, args=_restore_args(abstract_state)))

    def _write_epoch(self, epoch: int, state: Any, snapshot_fn, model: bool = True, snapshot: bool = True):
        """An epoch's model state (where this layout keeps one) and/or snapshot
        (the joint item always holds both)."""
        if self.layout == "joint":
            self._sealed_save(self.epochs, epoch, {"state": model_state(state), "snapshot": snapshot_fn()})
            return
        if self.layout == "blocks":
            if snapshot:
                self._block = [(epoch, snapshot_fn(), None)]
                self._write_block()
            return
        if snapshot:
            self._sealed_save(self.snapshots, epoch, snapshot_fn())
        if model and self.state is not None:
            self._sealed_save(self.state, epoch, model_state(state))

    @staticmethod
    def _sealed_save(manager: ocp.CheckpointManager, epoch: int, tree):
        """Save an item, first sealing the items this manager finished
        (`write_checksums`). Orbax's save waits for the manager's previous
        save to finish anyway, so waiting for it here adds no stall."""
        manager.wait_until_finished()
        _seal(manager)
        manager.save(epoch, args=_save_args(tree))

    def ensure_epoch(self, epoch: int, state: Any, snapshot_fn):
        """Write the model state and snapshot of a resume point's epoch if a
        kill lost them (they are written before the resume point's state, but
        asynchronously)."""
        if self.layout == "joint":
            if epoch not in self.epochs.all_steps():
                self._write_epoch(epoch, state, snapshot_fn)
            return
        model = self.state is not None and epoch not in self.state.all_steps()
        snapshot = epoch not in self.snapshot_epochs()
        if model or snapshot:
            self._write_epoch(epoch, state, snapshot_fn, model=model, snapshot=snapshot)

    def _managers(self):
        return [m for m in (self.epochs, self.snapshots, self.blocks, self.state, self.resume) if m is not None]

    def snapshot_epochs(self) -> list[int]:
        """The epochs whose snapshots are on disk."""
        if self.blocks is not None:
            return sorted(e for step in self.blocks.all_steps() for e in _block_epochs(self.blocks, step))
        return sorted((self.snapshots or self.epochs).all_steps())

    def discard_after(self, epoch: int):
        """Forget what a killed run wrote past the resume point it restarts from."""
        self._block = []
        if self.blocks is not None:   # a block reaching past `epoch` (resume_every changed): cut to its epochs up to it
            for step in self.blocks.all_steps():
                kept = [e for e in _block_epochs(self.blocks, step) if e <= epoch]
                if step > epoch and kept:
                    block = _restore_numpy(self.blocks, step)
                    n = len(kept)
                    self._sealed_save(self.blocks, kept[-1], jax.tree.map(lambda v: v[:n], block))
                    self.blocks.wait_until_finished()
                    _seal(self.blocks)
        for manager in self._managers():
            for step in manager.all_steps():
                if step > epoch:
                    manager.delete(step)
        if _is_primary() and self.records_path.exists():
            kept = [json.dumps(r) for r in _read_records(self.records_path) if r["epoch"] <= epoch]
            write_text_atomic(self.records_path, "".join(line + "\n" for line in kept))

    def wait(self):
        for manager in self._managers():
            manager.wait_until_finished()
            _seal(manager)

    def close(self):
        for manager in self._managers():
            manager.close()

    def planned_bytes(self, done: int, last: int, state, snapshot, record_bytes: int) -> dict[str, int]:
        """What epochs done+1 .. last will add to the disk, by kind: `state`
        and `snapshot` are the (abstract) full training state and snapshot of
        one epoch. The arrays' bytes are exact (uncompressed saves); orbax's
        metadata is estimated (`item_bytes`)."""
        epochs = range(done + 1, last + 1)
        resumes = [e for e in epochs if self.is_resume_point(e, e == last)]
        kept = [e for e in resumes if self.keep_resume_every and e % self.keep_resume_every == 0]
        if self.layout == "blocks":   # one item (metadata) per resume point, the arrays of every epoch
            snapshots = (len(epochs) * tree_bytes(snapshot)
                         + len(resumes) * (ITEM_OVERHEAD + ARRAY_OVERHEAD * (len(jax.tree.leaves(snapshot)) + 1)))
        else:
            snapshots = len(epochs) * item_bytes(snapshot)
        need = {"snapshots": snapshots,
                "resume points": (len(set(kept) | set(resumes[-RESUME_KEEP:]))) * item_bytes(state),
                "records": len(epochs) * record_bytes}
        if self.layout in ("joint", "split"):   # retention may prune some: the estimate is the upper bound
            need["model states"] = len(epochs) * item_bytes(model_state(state))
        return need

    def remove_unfinished(self):
        """Delete the temporaries of saves that did not complete (after a
        failure): readers ignore them, but they hold disk space."""
        for path in self.root.glob("*/*.orbax-checkpoint-tmp*"):
            shutil.rmtree(path, ignore_errors=True)


def kept_epochs(workdir, phase: str) -> list[int]:
    """Epochs whose model state retention must keep (written by dcjax.select)."""
    path = Path(workdir) / "keep_epochs.json"
    return [int(e) for e in json.loads(path.read_text()).get(phase, [])] if path.exists() else []


def write_text_atomic(path: Path, text: str):
    """Replace a file in one rename, so a kill or a full disk leaves the old
    content or the new, never half of it."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, content: bytes | Callable):
    """`write_text_atomic` for bytes, or for what `content(file)` writes
    into an open binary file (np.save, np.savez)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(content) if isinstance(content, bytes) else content(f)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy_atomic(path: Path, array) -> None:
    """np.save, atomically (no pickle)."""
    write_bytes_atomic(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def save_npz_atomic(path: Path, arrays: dict) -> None:
    """np.savez, atomically (no pickle)."""
    write_bytes_atomic(path, lambda f: np.savez(f, allow_pickle=False, **arrays))


def _read_records(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:   # a line cut short by a kill or a full disk: ignored
            log.warning("%s: line %d is incomplete and is ignored", path, number)
    return records


# ----------------------------------------------------------------------------
# Reading a run (notebooks, evaluation, selection). Everything comes back as numpy.

_PARTS = {"snapshots": "snapshot", "state": "state"}   # kind -> its part of a joint item


def _location(workdir, phase: str, kind: str) -> tuple[Path, str | None]:
    """Where `kind` ('snapshots', 'state': per-epoch model states, 'resume')
    lives, and the part of its items to read (None: the whole item)."""
    root = Path(workdir) / phase
    if kind in _PARTS and (root / JOINT).exists():
        return root / JOINT, _PARTS[kind]
    if kind == "snapshots" and (root / BLOCKS).exists():
        return root / BLOCKS, None
    return root / kind, None


def _is_blocks(manager: ocp.CheckpointManager) -> bool:
    return Path(manager.directory).name == BLOCKS


def _snapshot_index(manager: ocp.CheckpointManager) -> dict[int, tuple[int, int]]:
    """epoch -> (item step, position in the item) of a snapshot manager of either layout."""
    if not _is_blocks(manager):
        return {step: (step, None) for step in manager.all_steps()}
    return {e: (step, i) for step in manager.all_steps() for i, e in enumerate(_block_epochs(manager, step))}


def _reader(workdir, phase: str, kind: str) -> tuple[ocp.CheckpointManager, str | None]:
    """A read-only manager for `kind`, and the part of its items to read."""
    path, part = _location(workdir, phase, kind)
    if not path.exists():
        raise FileNotFoundError(f"no {kind} for phase {phase!r} in {workdir}")
    return _manager(path, read_only=True), part


def _steps(workdir, phase: str, kind: str) -> list[int]:
    """The epochs stored as `kind` (for snapshots: the epochs, not the block items)."""
    try:
        manager, _ = _reader(workdir, phase, kind)
    except FileNotFoundError:
        return []
    with manager as m:
        return sorted(_snapshot_index(m)) if kind == "snapshots" else sorted(m.all_steps())


def list_epochs(workdir, phase: str = "clustering", kind: str = "snapshots") -> list[int]:
    """Epochs that have a snapshot (kind='snapshots'), a stored model state
    (kind='state': a per-epoch state or a resume point; `load_state` rebuilds
    the others) or a full training state to resume from (kind='resume')."""
    if kind == "state":
        stored = sorted(set(_steps(workdir, phase, "state")) | set(_steps(workdir, phase, "resume")))
        if not stored and not (Path(workdir) / phase).exists():
            raise FileNotFoundError(f"no phase {phase!r} in {workdir}")
        return stored
    manager, _ = _reader(workdir, phase, kind)
    with manager as m:
        return sorted(_snapshot_index(m)) if kind == "snapshots" else sorted(m.all_steps())


def epoch_dir(workdir, epoch: int, phase: str = "clustering", kind: str = "snapshots") -> Path:
    """The orbax directory that holds an epoch's snapshot or stored model
    state (a per-epoch state, else its resume point)."""
    if kind == "state" and epoch not in _steps(workdir, phase, "state"):
        kind = "resume"
    path = _location(workdir, phase, kind)[0]
    if path.name == BLOCKS:   # the block item holding the epoch
        with _manager(path, read_only=True) as m:
            located = _snapshot_index(m).get(epoch)
        if located is None:
            raise FileNotFoundError(f"no {phase} snapshot of epoch {epoch} in {workdir}")
        return path / str(located[0])
    return path / str(epoch)


def load_snapshot(workdir, epoch: int, phase: str = "clustering") -> dict[str, np.ndarray]:
    """{'embedding': (S, N, e), 'assignments': (S, N), 'centers': (S, k, e), ...}
    DamagedCheckpointError when the epoch's snapshot is on disk but unreadable."""
    with snapshot_reader(workdir, phase) as load:
        return load(epoch)


@contextlib.contextmanager
def snapshot_reader(workdir, phase: str = "clustering"):
    """`with snapshot_reader(w) as load: load(epoch)`: one orbax reader kept
    open, since opening one costs most of a small snapshot's load time."""
    manager, part = _reader(workdir, phase, "snapshots")
    with manager as m:
        if not _is_blocks(m):
            yield lambda epoch: _checked(m, epoch, f"{phase} snapshot", lambda: _restore_numpy(m, epoch, part))
            return
        index = _snapshot_index(m)
        cached = {}   # the last block read: epochs are mostly read in order, a block once

        def load(epoch):
            if epoch not in index:
                raise FileNotFoundError(f"no {phase} snapshot for epoch {epoch} in {m.directory}")
            step, i = index[epoch]
            if step not in cached:
                cached.clear()
                cached[step] = _checked(m, step, f"{phase} snapshot", lambda: _restore_numpy(m, step), epoch=epoch)
            return jax.tree.map(lambda v: v[i], {k: v for k, v in cached[step].items() if k != "epochs"})
        yield load


def load_state(workdir, epoch: int, phase: str = "clustering", target: Any = None, kind: str = "state") -> dict:
    """The model state of any trained epoch: params (['params']['ae'] in the
    clustering phase, ['params'] in pretraining), centers
    (['params']['centers']), method state, seed keys. Read where it is stored
    (a per-epoch state or a resume point), else replayed from the newest
    intact resume point before it (pretraining: from the initial state); see
    REPLAY_ENTRY_POINT. kind='resume' reads a resume point instead: the same
    plus the optimiser ('opt_state'). Without `target` (an abstract pytree)
    everything comes back as numpy. A stored state that cannot be read
    raises DamagedCheckpointError."""
    if kind not in ("state", "resume"):
        raise ValueError(f"kind must be 'state' or 'resume', got {kind!r}")
    kinds = ["resume"] if kind == "resume" else ["state", "resume"]
    for source in kinds:
        if epoch in _steps(workdir, phase, source):
            manager, part = _reader(workdir, phase, source)
            what = f"{phase} {'resume point' if source == 'resume' else 'model state'}"
            with manager as m:
                if target is None:
                    return _checked(m, epoch, what, lambda: _restore_numpy(
                        m, epoch, part, model_only=kind == "state" and source == "resume"))
                return _checked(m, epoch, what, lambda: _restore(m, epoch, target, part))
    if kind == "resume":
        raise FileNotFoundError(f"no {phase} resume point for epoch {epoch} in {workdir}")
    state = _replay(workdir, phase, epoch)
    if target is None:
        return state
    return jax.tree.map(lambda t, a: jax.device_put(a, getattr(t, "sharding", None)), target, model_state(state))


def _replay(workdir, phase: str, epoch: int) -> dict:
    """An epoch's model state that is not stored, rebuilt through REPLAY_ENTRY_POINT."""
    trained = _steps(workdir, phase, "snapshots")
    if epoch not in trained:
        raise FileNotFoundError(f"epoch {epoch} of phase {phase!r} was not trained in {workdir} "
                                f"(snapshots: {trained[:1]}..{trained[-1:]})")
    module, name = REPLAY_ENTRY_POINT.split(":")
    replay = getattr(importlib.import_module(module), name)
    for start in reversed([e for e in _steps(workdir, phase, "resume") if e <= epoch]):
        def read_start(target, start=start):
            return load_state(workdir, start, phase, target=target, kind="resume")
        try:
            log.info("replaying %s epochs %d..%d of %s", phase, start + 1, epoch, workdir)
            return replay(Path(workdir), phase, start, read_start, epoch)
        except DamagedCheckpointError as e:
            log.warning("%s; replaying from an older one", e)
    if phase != "pretrain":
        raise DamagedCheckpointError(f"no intact {phase} resume point at or before epoch {epoch} in {workdir} "
                                     "to replay it from")
    return replay(Path(workdir), phase, 0, None, epoch)


def load_records(workdir, phase: str = "clustering") -> list[dict]:
    """The records of a phase; a line cut short (a kill, a full disk) is skipped."""
    path = Path(workdir) / phase / "records.jsonl"
    return _read_records(path) if path.exists() else []


def load_config(workdir):
    """The run's config as an ml_collections.ConfigDict."""
    import ml_collections
    return ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))


def alive_at(workdir: Path, phase: str, epoch: int, n_seeds: int) -> np.ndarray:
    """Seeds not diverged up to `epoch` of `phase`, by the records (a seed
    frozen in pretraining stays frozen in clustering)."""
    alive = np.ones(n_seeds, bool)
    records = [r for p in PHASES[:PHASES.index(phase)]
               for r in load_records(workdir, p)]
    records += [r for r in load_records(workdir, phase) if r["epoch"] <= epoch]
    for record in records:
        alive &= ~np.asarray(record.get("diverged", [False] * n_seeds), bool)
    return alive


def diverged_seeds(workdir) -> dict[int, dict]:
    """{seed: {'phase', 'epoch', 'last_finite_epoch'}} for the seeds whose loss
    went non-finite: the epoch whose update was discarded, and the epoch (of
    that phase) the seed's state stayed at. From the records."""
    config = load_config(workdir)
    seeds = list(range(int(config.seed), int(config.seed) + int(config.seeds)))
    out = {}
    for phase in PHASES:
        for record in load_records(workdir, phase):
            for i, frozen in enumerate(record.get("diverged", [])):
                if frozen and seeds[i] not in out:
                    out[seeds[i]] = {"phase": phase, "epoch": record["epoch"],
                                     "last_finite_epoch": record["epoch"] - 1}
    return out


# -- what training resolved at its start, for the readers (dcjax.run)

def data_fingerprint(x: np.ndarray) -> str:
    """sha256 of the data as trained on (dtype, shape and bytes): a later
    reader can tell whether a file still holds the same data."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(memoryview(x).cast("B"))
    return "sha256:" + h.hexdigest()


def run_facts(x: np.ndarray, y, n_clusters: int) -> dict:
    """What training writes to run.json at its start (`write_run_facts`):
    the run's k, the data's shape, whether it has labels (for evaluation
    only), and its fingerprint."""
    return {"n_clusters": int(n_clusters), "n": int(x.shape[0]), "d": int(np.prod(x.shape[1:])),
            "labelled": y is not None, "data_fingerprint": data_fingerprint(x)}


def write_run_facts(workdir, facts: dict) -> None:
    write_text_atomic(Path(workdir) / RUN_FILE, json.dumps(facts, indent=2) + "\n")
