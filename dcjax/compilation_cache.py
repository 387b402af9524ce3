"""JAX's persistent compilation cache, on by default for dcjax's commands and estimators.

Compiling is most of a small fit (25 of 34 s on a 60-row file): with the
cache, a second process with the same shapes loads the compiled programs
from disk instead (measured: the first `fit` of a new process went from
61-75 s to 16 s). The cache lives in the user's cache folder,
`$XDG_CACHE_HOME/dcjax/jax` (default `~/.cache/dcjax/jax`).

`DCJAX_COMPILATION_CACHE=off` turns it off; `DCJAX_COMPILATION_CACHE=PATH`
puts it elsewhere; the command line's `--compilation_cache` says the same.
"""
import logging
import os
from pathlib import Path

ENV = "DCJAX_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none", "")
MIN_COMPILE_SECONDS = 0.0

log = logging.getLogger(__name__)


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcjax" / "jax"


def resolve(setting: str | None = None) -> Path | None:
    """The cache folder a setting (else $DCJAX_COMPILATION_CACHE, else 'on') names; None: off."""
    setting = os.environ.get(ENV, "on") if setting is None else setting
    if setting.strip().lower() in OFF:
        return None
    return default_dir() if setting.strip().lower() in ("on", "1", "true", "yes", "default") else Path(setting)


def enable(setting: str | None = None) -> Path | None:
    """Point JAX at the cache folder (creating it), unless the setting says
    off or the user has set JAX's own `jax_compilation_cache_dir`. Call before
    the first compilation. Returns the folder used, or None."""
    import jax
    if jax.config.jax_compilation_cache_dir:   # the user's own choice wins
        return Path(jax.config.jax_compilation_cache_dir)
    folder = resolve(setting)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # a read-only home: run without the cache rather than fail
        log.warning("compilation cache off: cannot create %s (%s)", folder, e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, not only those over JAX's default 1 s of compiling: a fit
    # compiles many small ones (the scores), ~10 s together on 2 CPU cores.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder
