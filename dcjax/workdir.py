"""The workdir a run writes: whose it is, who holds it, whether it can take the run.

Everything here happens before any compute, so that what cannot finish is
refused in one line:
- `check_own`: the folder is dcjax's (new, empty, or holding the marker file
  `MARKER_FILE`, or a run written before the marker existed); an unrelated
  non-empty folder is refused unless `allow_foreign_workdir` is set, since a
  run writes summary.json, report.html, report/ and checkpoints there.
- `lock`/`is_locked`: one live run per workdir (`filelock`, portable; the OS
  drops the lock of a killed process, so a stale lock is taken over).
- `check_writable`, `check_disk`: a read-only folder or too little disk.
- `read_config`/`write_config`: config.json, refusing to continue a run with
  another setup, and recording `provenance()` beside the settings.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import filelock
import numpy as np

from dcjax import config as config_lib
from dcjax.config import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = "dcjax.lock"
MARKER_FILE = "dcjax-workdir.json"   # makes a folder dcjax's: training may write anything into it
CONFIG_FILE = "config.json"
RUN_FOLDERS = ("pretrain", "clustering")   # checkpointing.PHASES: the folders a run writes into
DISK_REFUSE = 0.9   # refuse a run whose estimated writes exceed this fraction of the free space
DISK_WARN = 0.5     # warn above this fraction
# Settings that may differ when a killed or finished run is continued.
RESUMABLE_CHANGES = ("progress", "report", "pretrain.epochs", "clustering.epochs", "checkpoint.", "eval_chunk",
                     "allow_foreign_workdir")
NOT_SETTINGS = ("provenance",)   # keys of config.json that record, not configure


class WorkdirBusyError(RuntimeError):
    """Another live process trains in this workdir."""


class ForeignWorkdirError(ConfigError):
    """A non-empty folder that is not dcjax's: training would overwrite its files."""


# -- whose folder it is

def is_own(workdir) -> bool:
    """Whether dcjax may write anything into `workdir`: it is missing or
    empty, holds the marker, or holds a run from before the marker."""
    workdir = Path(workdir)
    if not workdir.exists() or (workdir / MARKER_FILE).is_file():
        return True
    if not workdir.is_dir():
        return False
    if {p.name for p in workdir.iterdir()} <= {LOCK_FILE, CONFIG_FILE, *RUN_FOLDERS}:
        return True   # empty, or what a run killed early leaves
    return (workdir / CONFIG_FILE).is_file() and any((workdir / f).is_dir() for f in RUN_FOLDERS)


def check_own(workdir, allow_foreign: bool = False) -> None:
    """Refuse an unrelated non-empty folder (one line), unless `allow_foreign`."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ForeignWorkdirError(f"the workdir {workdir} is a file, not a folder; choose another --workdir")
    if is_own(workdir):
        return
    if allow_foreign:
        log.warning("writing into %s, which holds other files (allow_foreign_workdir)", workdir)
        return
    raise ForeignWorkdirError(
        f"{workdir} is not empty and is not a dcjax workdir (no {MARKER_FILE}): a run writes config.json, "
        "summary.json, report.html, report/ and checkpoints there, and would overwrite files of the same name; "
        "choose a new or empty --workdir, or set --config.allow_foreign_workdir=True to write into it anyway",
        "allow_foreign_workdir")


def mark(workdir) -> None:
    """Create `workdir` and its marker (once): from now on it is dcjax's."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / MARKER_FILE
    if not path.exists():
        from dcjax import __version__
        path.write_text(json.dumps({"dcjax": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


def check_writable(workdir: Path) -> None:
    """Create the workdir and a file in it and in each folder a run writes
    into, so that a read-only disk or folder is refused before any compute.
    Only dcjax's own folders are probed, never a user's."""
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        folders = [workdir] + [p for name in RUN_FOLDERS if (workdir / name).is_dir()
                               for p in [workdir / name, *(workdir / name).glob("*/")]]
        for folder in folders:
            probe = folder / f".dcjax-write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the workdir {workdir} ({e.strerror or e}); "
                              "give it write permission or choose another --workdir") from e


# -- one live run per workdir

def _holder(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:   # Windows: the holder's locked region cannot be read
        return ""


def _write_holder(path: Path, text: str) -> None:
    try:
        with open(path, "r+") as f:   # not the lock's own descriptor: the flock stays
            f.truncate(0)
            f.write(text)
    except OSError as e:   # the lock still holds; only the note for humans is lost
        log.debug("could not write %s: %s", path, e)


@contextlib.contextmanager
def lock(workdir: Path):
    """Hold `<workdir>/dcjax.lock` while a run trains there, with our pid in
    the file. The OS drops the lock when its process dies, however it dies,
    so the lock of a killed run is stale by construction and the next launch
    simply takes it over; a second launch while the first lives refuses at
    once, naming the first's pid."""
    path = Path(workdir) / LOCK_FILE
    left = _holder(path)   # read before acquiring: filelock may truncate the file when it opens it
    held = filelock.FileLock(path, timeout=0)
    try:
        held.acquire()
    except filelock.Timeout:
        raise WorkdirBusyError(f"{workdir} is in use by another dcjax run ({_holder(path) or left or 'unknown'}); "
                               "wait for it to finish or stop it, or choose another --workdir") from None
    try:
        if left:   # written by a process that did not get to clear it: killed
            log.warning("taking over the lock of %s in %s: that process no longer holds it", left, workdir)
        _write_holder(path, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        _write_holder(path, "")   # cleared: a clean end, not a stale lock
        held.release()


def is_locked(workdir) -> bool:
    """Whether a live run holds `workdir` now (a non-blocking try of the same
    lock, released at once). A folder without a lock file is not locked."""
    path = Path(workdir) / LOCK_FILE
    if not path.exists():
        return False
    probe = filelock.FileLock(path, timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    probe.release()
    return False


# -- config.json

def read_config(workdir) -> dict | None:
    """config.json as a dict (None when there is none); a file that is not a
    JSON object is one line naming it."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a dcjax config (not JSON: {e}); use a new --workdir, "
                          "or remove that file if the folder holds no run") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is not a dcjax config (JSON, but not an object); use a new --workdir")
    return value


def changed_settings(before: dict, now: dict) -> list[str]:
    """Dotted names of the settings that differ between two configs (as
    dicts). A setting dcjax gained after `before` was written is no change
    at its default: an older run stays resumable and reusable."""
    before, now = ({k: v for k, v in c.items() if k not in NOT_SETTINGS} for c in (before, now))
    before, now = config_lib.flat_fields(before), config_lib.flat_fields(now)
    defaults = config_lib.flat_fields(json.loads(config_lib.get_default_config().to_json_best_effort()))
    return sorted(k for k in set(before) | set(now)
                  if before.get(k) != now.get(k)
                  and not (k not in before and k in defaults and now[k] == defaults[k]))


def check_config(config, workdir: Path) -> None:
    """Refuse to continue the run in `workdir` with another setup."""
    before = read_config(workdir)
    if before is None:
        return
    changed = [k for k in changed_settings(before, json.loads(config.to_json_best_effort()))
               if not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(f"{workdir} holds a run with a different configuration "
                          f"({', '.join(changed)}); use a new --workdir")


def write_config(config, workdir: Path, write: bool = True, data_fingerprint: str | None = None) -> None:
    """Write config.json (the settings, and `provenance` of this run, with the
    data's fingerprint) after `check_config`; `write=False` (a process other
    than 0) only checks."""
    check_config(config, workdir)
    if write:
        from dcjax import checkpointing
        record = provenance() | ({"data_fingerprint": data_fingerprint} if data_fingerprint else {})
        current = json.loads(config.to_json_best_effort()) | {"provenance": record}
        checkpointing.write_text_atomic(Path(workdir) / CONFIG_FILE, json.dumps(current, indent=2))


def provenance() -> dict:
    """What produced a run: dcjax's version (and git revision when it runs
    from a checkout), jax/jaxlib, Python and the devices."""
    import jax
    import jaxlib
    from dcjax import __version__
    out = {"dcjax": __version__, "git_revision": _git_revision(), "jax": jax.__version__,
           "jaxlib": jaxlib.__version__, "python": platform.python_version(),
           "devices": [str(d.device_kind) for d in jax.devices()], "platform": jax.default_backend(),
           "host": socket.gethostname()}
    return out


def _git_revision() -> str | None:
    """The commit the package sits in (with '+dirty' for local changes), or None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


# -- the claim: before any compute, on every process of a distributed run

def agree(problem: Exception | None):
    """Raise `problem`; under jax.distributed, on every process when any
    process has one, so that none waits forever for the others."""
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        failed = np.asarray(multihost_utils.process_allgather(np.int32(problem is not None)))
        if failed.any() and problem is None:
            raise RuntimeError(f"process(es) {np.flatnonzero(failed).tolist()} of this distributed run "
                               "refused to start; their output says why")
    if problem is not None:
        raise problem


@contextlib.contextmanager
def claim(workdir: Path, allow_foreign: bool = False):
    """The workdir checked as dcjax's, written to, marked and locked, or a
    clear error before any compute (the refused folder left as it was)."""
    import jax
    workdir = Path(workdir)
    with contextlib.ExitStack() as stack:
        problem = None
        try:
            check_own(workdir, allow_foreign)
            read_config(workdir)   # a broken config.json: refused before the lock is taken
            check_writable(workdir)
            if jax.process_index() == 0:
                stack.enter_context(lock(workdir))
                mark(workdir)
        except (OSError, WorkdirBusyError, ConfigError) as e:
            problem = e
        agree(problem)
        yield


# -- disk

def check_disk(config, workdir: Path, plans: dict[str, dict[str, int]]):
    """The error to raise for a run whose checkpoints would not fit the free
    space (None when they fit; a warning when they would take much of it),
    saying what they are and how to write less."""
    from dcjax import checkpointing
    need = {f"{phase} {kind}": n for phase, plan in plans.items() for kind, n in plan.items() if n}
    total, free = sum(need.values()), shutil.disk_usage(workdir).free
    parts = ", ".join(f"{name} {n / 1e6:,.1f} MB" for name, n in sorted(need.items(), key=lambda kv: -kv[1]))
    message = (f"this run will write about {total / 1e6:,.1f} MB into {workdir} ({parts}); {free / 1e6:,.0f} MB "
               "are free. To write less: --config.checkpoint.embedding_dtype=float16 (halves the snapshots), "
               "--config.checkpoint.model_states=replay (model states only at resume points), a larger "
               "--config.checkpoint.keep_resume_every (fewer resume points kept), fewer --config.seeds or epochs; "
               "or free space, or another --workdir")
    log.info("this run will write about %.1f MB (%s)", total / 1e6, parts)
    if total > DISK_REFUSE * free and config.checkpoint.get("check_disk", True):
        return checkpointing.DiskFullError(message + ". --config.checkpoint.check_disk=False runs it anyway.")
    if total > DISK_WARN * free:
        log.warning(message)
    return None
