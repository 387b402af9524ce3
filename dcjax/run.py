"""A run as a record: what the reading side knows of a workdir, read once.

`RunRecord(workdir)` is the one reader of a run, finished or still running.
`dcjax.evaluate`, `dcjax.selection`, `dcjax.launch`, `dcjax.report` and the
estimators read through it, never through the training loop: importing this
module loads neither flax, optax nor `dcjax.train`.

What it holds, each part read on first use and then kept:
* `config`, and the facts training resolved at its start (`run.json`: the
  data set's k, N, d and a fingerprint of the data), so that no reader loads
  the data set to learn k. A run written before run.json existed gets them
  from the data set, once.
* `seeds`, `records(phase)`, `diverged` (the seeds whose loss went non-finite).
* `selection_phase`: the phase whose epochs are candidates, from the config
  (not from what is on disk: a DKM run killed in pretraining has no
  candidates yet; it is no AE+k-means run).
* `status()`: in progress (another process holds the workdir's lock),
  complete, or incomplete, with which phase and how many of how many epochs.
* `stream(phase, epochs)`: each snapshot read once, through one reader.
* The scoring pass's outputs (`dcjax.evaluate` writes them under `scored/`):
  each scored epoch's partition of every seed (for a pretraining epoch, the
  k-means of its embedding, computed once), and its embedding at a fixed
  sample of `SAMPLE_POINTS` points. Selection, the launch choice, the chance
  test and the report read these, so a second `select` computes no k-means
  and reads no snapshot.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from pathlib import Path

import numpy as np

from dcjax import checkpointing, methods
from dcjax.config import seed_ids
from dcjax.workdir import LOCK_FILE   # the training driver's lock

log = logging.getLogger(__name__)

RUN_FILE = checkpointing.RUN_FILE
SCORED = "scored"         # the scoring pass's partitions and point samples
SAMPLE_POINTS = 500       # the fixed point sample of the pooled indices and the launch silhouette (O(n^2) scores)
SAMPLE_KEY = 0            # its seed: the same points for every epoch, seed and reader


def sample_rows(n: int, size: int = SAMPLE_POINTS) -> np.ndarray:
    """The fixed, sorted sample of rows that the O(n^2) scores read."""
    return np.sort(np.random.default_rng(SAMPLE_KEY).choice(n, min(size, n), replace=False))


@contextlib.contextmanager
def quiet_orbax():
    """Orbax warns (through absl) on every read-only restore: hide warnings while reading."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def is_locked(workdir) -> bool:
    """Whether a live process holds the workdir's training lock (`dcjax.workdir`).
    On POSIX a shared, non-blocking probe that needs no write access (a run on
    a read-only disk can be read); the lock is released by the kernel when its
    process dies, so a stale file from a killed run does not count. Elsewhere,
    `workdir.is_locked`'s own probe."""
    path = Path(workdir) / LOCK_FILE
    if not path.exists():
        return False
    try:
        import fcntl
    except ImportError:   # Windows
        from dcjax import workdir as workdir_lib
        return workdir_lib.is_locked(workdir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunReadError(RuntimeError):
    """What reading a run can meet that is the run's state, not a bug: the
    command line says it in one line."""


class RunNotReadyError(RunReadError):
    """The run has no candidates yet (still in pretraining, or not started)."""


class ReadOnlyRunError(RunReadError):
    """The run cannot be written to, and reading it writes its scores and choice beside it."""


def require_writable(workdir, what: str = "scores.csv, scored/ and selection.json") -> None:
    """Refuse, before any work, a run on a read-only disk or folder: reading
    it writes `what` into it."""
    workdir = Path(workdir)
    if not os.access(workdir, os.W_OK):
        raise ReadOnlyRunError(f"{workdir} is read-only, and choosing writes {what} into the run: copy it "
                               f"somewhere writable (cp -r {workdir} <copy>) and run this on the copy")


class RunRecord:
    """One run, read once (module docstring)."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        if not (self.workdir / "config.json").exists():
            raise FileNotFoundError(f"{self.workdir} holds no run (no config.json): pass the --workdir "
                                    "that dcjax.main wrote")
        self._epochs: dict[str, list[int]] = {}
        self._records: dict[str, list[dict]] = {}

    # -- the configuration and what training resolved
    @functools.cached_property
    def config(self):
        return checkpointing.load_config(self.workdir)

    @functools.cached_property
    def facts(self) -> dict:
        """run.json; for a run written before it existed, the same facts from
        the data set (loaded once)."""
        path = self.workdir / RUN_FILE
        if path.exists():
            return json.loads(path.read_text())
        from dcjax import data
        dataset = data.load_dataset(self.config.dataset)
        return checkpointing.run_facts(dataset.x, dataset.y, int(self.config.dataset.n_clusters) or dataset.n_clusters)

    @property
    def n_clusters(self) -> int:
        """The data set's (or configured) k."""
        return int(self.facts["n_clusters"])

    @functools.cached_property
    def n_centers(self) -> int:
        """Label range of the run's partitions: k, or UNSEEN's k_init."""
        return methods.n_centers(self.config, self.n_clusters)

    @property
    def labelled(self) -> bool:
        """Whether the data set has labels (read for evaluation only)."""
        return bool(self.facts.get("labelled", True))

    @property
    def n_rows(self) -> int:
        return int(self.facts["n"])

    @functools.cached_property
    def seeds(self) -> list[int]:
        return seed_ids(self.config)

    @functools.cached_property
    def algorithm(self) -> str:
        return methods.algorithm_label(self.config)

    @functools.cached_property
    def fixed_k(self) -> bool:
        return not methods.unseen_enabled(self.config)

    def info(self) -> dict:
        return {"run": str(self.workdir), "dataset": str(self.config.dataset.name), "algorithm": self.algorithm,
                "phase": self.selection_phase}

    # -- what is on disk
    def epochs(self, phase: str) -> list[int]:
        """Snapshot epochs of a phase ([] when absent: a run with
        `pretrained_from` has its pretraining in the other run)."""
        if phase not in self._epochs:
            try:
                with quiet_orbax():
                    self._epochs[phase] = checkpointing.list_epochs(self.workdir, phase)
            except FileNotFoundError:
                self._epochs[phase] = []
        return self._epochs[phase]

    def records(self, phase: str) -> list[dict]:
        if phase not in self._records:
            self._records[phase] = checkpointing.load_records(self.workdir, phase)
        return self._records[phase]

    @functools.cached_property
    def diverged(self) -> dict[int, dict]:
        return checkpointing.diverged_seeds(self.workdir)

    @functools.cached_property
    def selection_phase(self) -> str:
        """The clustering phase, except for a run that trains no clustering
        epoch (AE+k-means): there the candidates are the pretraining epochs,
        each k-means'd."""
        return "clustering" if int(self.config.clustering.epochs) > 0 else "pretrain"

    def planned(self, phase: str) -> int:
        """The last epoch the configuration asks of a phase."""
        if phase == "pretrain":
            return 0 if self.config.get("pretrained_from") else int(self.config.pretrain.epochs)
        return int(self.config.clustering.epochs)

    def status(self) -> dict:
        """Where the run stands. `complete`: the selection phase reached its
        configured last epoch. `in_progress`: a live process holds the lock
        (its newest epochs may still be written). `message`: one line for a
        run that is not complete, or in progress."""
        phase = self.selection_phase
        done = self.epochs(phase)
        last = max(done) if done else None
        planned = self.planned(phase)
        complete = last is not None and last >= planned
        in_progress = is_locked(self.workdir)
        reached = ("clustering" if self.epochs("clustering") else "pretrain" if self.epochs("pretrain") else None)
        where = (f"{reached} epoch {max(self.epochs(reached))} of {self.planned(reached)}" if reached
                 else "no epoch written yet")
        message = None
        if in_progress:
            message = (f"training is still running in {self.workdir} (it holds {LOCK_FILE}; {where}): "
                       "what is read now is not the configured run's end")
        elif not complete:
            message = (f"the run is incomplete ({where}; the {phase} phase has "
                       f"{0 if last is None else last} of {planned} epochs): it was stopped before its end, "
                       "so what is read is not the configured run's end; run the same training command "
                       "again to continue it")
        return {"phase": phase, "last_epoch": last, "planned": planned, "complete": complete,
                "in_progress": in_progress, "reached": where, "message": message}

    def require_candidates(self) -> list[int]:
        """The selection phase's epochs, or RunNotReadyError in one line."""
        epochs = self.epochs(self.selection_phase)
        if not epochs:
            st = self.status()
            raise RunNotReadyError(
                f"{self.workdir}: no {st['phase']} epoch to choose from yet ({st['reached']}); "
                + ("wait until training reaches it" if st["in_progress"] else
                   "run the same training command again to continue the run"))
        return epochs

    def stream(self, phase: str, epochs):
        """(epoch, snapshot) for each epoch, read once through one reader;
        (epoch, None) where the snapshot is damaged (a warning says so)."""
        epochs = list(epochs)
        if not epochs:   # opening a reader costs; nothing to read needs none
            return
        with checkpointing.snapshot_reader(self.workdir, phase) as load, quiet_orbax():
            for epoch in epochs:
                try:
                    yield epoch, load(epoch)
                except checkpointing.DamagedCheckpointError as e:
                    log.warning("%s; epoch %d of %s is left out", e, epoch, phase)
                    yield epoch, None

    # -- the scoring pass's outputs
    def scored_path(self, phase: str, epoch: int) -> Path:
        return self.workdir / SCORED / phase / f"epoch_{epoch:06d}.npz"

    def scored_epochs(self, phase: str) -> list[int]:
        folder = self.workdir / SCORED / phase
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.npz"))

    def save_scored(self, phase: str, epoch: int, labels: np.ndarray, sample: np.ndarray) -> None:
        """One epoch's partitions (S, N) and its embeddings at the fixed
        sample (S, SAMPLE_POINTS, e), atomically (a kill leaves no half file)."""
        path = self.scored_path(phase, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        dtype = np.uint8 if self.n_centers <= 256 else np.int32
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, labels=np.asarray(labels).astype(dtype), sample=np.asarray(sample, np.float32))
        os.replace(tmp, path)

    def load_scored(self, phase: str, epoch: int) -> dict[str, np.ndarray]:
        with np.load(self.scored_path(phase, epoch)) as f:
            return {"labels": f["labels"], "sample": f["sample"]}

    def partitions(self, phase: str, epochs=None) -> tuple[list[int], np.ndarray]:
        """(epochs, labels (E, S, N)) of the scored epochs of a phase."""
        epochs = self.scored_epochs(phase) if epochs is None else list(epochs)
        if not epochs:
            return [], np.zeros((0, len(self.seeds), self.n_rows), np.uint8)
        return epochs, np.stack([self.load_scored(phase, e)["labels"] for e in epochs])
