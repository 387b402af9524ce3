"""Every command of the README and of docs/ runs.

Each fenced block of shell, Python or YAML is marked after its language:
- `run`: run here, in the order of DOCS, in one folder outside the
  repository (later pages use the runs of earlier ones), with `dcjax` and
  `python` on the PATH as after `pip install .`. Training is shortened to 2
  pretraining and 2 clustering epochs (SHORT), so CI stays quick: the
  commands are the README's, the epochs are not. The commands share one
  JAX compilation cache.
- `ci`: `.ci/run` runs it (installation and the test command);
- `example`: not runnable here (it needs a cluster); each is listed in
  EXAMPLES with the reason.
An unmarked block fails the test, so a new command cannot slip in unrun.
"""
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/own-data.md", "docs/running.md", "docs/choosing.md", "docs/report.md",
        "docs/run-files.md", "docs/unseen.md", "docs/deccs.md", "docs/faults.md", "docs/distributed.md",
        "docs/results.md", "docs/ddc.md"]
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py", "yaml"}
MARKS = {"run", "ci", "example"}
EXAMPLES = {   # (file, first line) -> why the tests do not run it
    ("docs/distributed.md", "#SBATCH --nodes=4 --ntasks-per-node=1 --gpus-per-task=1"): "needs a SLURM cluster",
    ("docs/distributed.md", 'command: ["dcjax", "train", "--config", "dkm_mnist",'): "needs a GKE cluster",
}
SHORT = "--config.pretrain.epochs=2 --config.clustering.epochs=2 --config.progress=False"
ESTIMATORS = r"\b(AEKMeans|DEC|IDEC|DCN|DKM|DECCS|UnseenDCN|UnseenDEC|UnseenDKM)\("


def blocks():
    """(file, line, language, mark, text) of every fenced block, in DOCS order."""
    found = []
    for name in DOCS:
        lines = (REPO / name).read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^```(\S*)\s*(\S*)", lines[i])
            if fence:
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                found.append((name, i + 1, fence.group(1), fence.group(2), "\n".join(lines[i + 1:end])))
                i = end
            i += 1
    return found


def shortened_shell(text: str) -> str:
    """The block with SHORT added to every training command (before a
    trailing comment or `&`)."""
    logical = re.sub(r"\\\n\s*", " ", text).splitlines()
    out = []
    for line in logical:
        command, hash_, comment = line.partition(" #")
        if re.search(r"\bdcjax train\b|\bdcjax\.main\b", command):
            command = command.rstrip()
            background = command.endswith("&")
            command = command.rstrip("&").rstrip() + " " + SHORT + (" &" if background else "")
        out.append(command + (hash_ + comment if hash_ else ""))
    return "\n".join(out)


def shortened_python(text: str) -> str:
    return re.sub(ESTIMATORS, r"\1(pretrain_epochs=2, clustering_epochs=2, ", text)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder outside the repository, and the environment of a user who
    ran `pip install .`: `dcjax` and `python` on the PATH."""
    home = tmp_path_factory.mktemp("user")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    script = bin_dir / "dcjax"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dcjax.cli \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (home / "configs").symlink_to(REPO / "configs")   # `--config configs/...` as from a clone
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu",
           # one compilation per shape for all the commands (they train the same networks): halves the time
           "JAX_COMPILATION_CACHE_DIR": str(home / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    return home, env


def test_every_command_block_is_marked():
    unmarked = [f"{name}:{line} ```{language}" for name, line, language, mark, _ in blocks()
                if language in COMMAND_LANGUAGES and mark not in MARKS]
    assert not unmarked, f"mark these blocks run, ci or example: {unmarked}"
    examples = {(name, text.splitlines()[0]) for name, _, _, mark, text in blocks() if mark == "example"}
    assert examples == set(EXAMPLES)


def test_the_ci_blocks_are_what_ci_runs():
    """`.ci/run` installs with `pip install -e ".[test]"` and runs the README's
    test command; `pip install .` is the same installation, not editable
    (the new user's transcript runs it in a fresh venv)."""
    def plain(command):
        return command.replace("python3 -m pip install --quiet", "pip install").replace("python3 -m pip", "pip")
    ci = plain((REPO / ".ci" / "run").read_text())
    for name, line, _, mark, text in blocks():
        if mark != "ci":
            continue
        for command in filter(None, (c.partition(" #")[0].strip() for c in text.splitlines())):
            for part in map(str.strip, command.split("&&")):
                assert part == "pip install ." or plain(part) in ci, f"{name}:{line}: {part!r} is not in .ci/run"


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


RUNNABLE = [(name, line, language, text) for name, line, language, mark, text in blocks() if mark == "run"]


@pytest.mark.parametrize("name, line, language, text", RUNNABLE, ids=[f"{n}:{l}" for n, l, _, _ in RUNNABLE])
def test_the_documented_commands_run(user, name, line, language, text):
    home, env = user
    if language == "python":
        argv = [sys.executable, "-c", shortened_python(text)]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", shortened_shell(text)]
    done = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{name}:{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
