"""The `dcjax` command (dcjax/cli.py): one entry point, absl flags everywhere,
no flag defined at import, `--show-config`; and the packaging behind it."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from absl import flags

from dcjax import cli

REPO = Path(__file__).resolve().parent.parent


def dcjax(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dcjax.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands():
    done = dcjax("--help")
    assert done.returncode == 0
    for command in ("train", "select", "report", "evaluate", "explain"):
        assert f"\n  {command} " in done.stdout


def test_show_config_prints_the_fields_and_trains_nothing(tmp_path):
    done = dcjax("train", "--config", "dkm", "--show-config", "--config.seeds=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "algorithm: dkm" in done.stdout and "seeds: 4" in done.stdout
    assert "clustering:\n  epochs: 150" in done.stdout and "learning_rate: 0.0001" in done.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["frob"], "dcjax: error: unknown command 'frob'"),
    (["select"], "dcjax select: error: --workdir is required"),
    (["select", "--workdir", "nowhere"], "dcjax select: error: nowhere holds no run"),
    (["evaluate", "--workdir=x", "--frob"], "dcjax evaluate: error: Unknown command line flag 'frob'"),
    (["train", "--config.seeds=0"], "dcjax train: error: seeds = 0 is invalid"),
])
def test_a_mistake_is_one_line_and_exit_status_2(tmp_path, args, message):
    done = dcjax(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith(message), done.stderr


def test_every_command_has_help():
    for command in ("train", "select", "report", "evaluate"):
        done = dcjax(command, "--help")
        assert done.returncode == 0 and "--workdir" in done.stdout, (command, done.stderr)


def test_no_flag_is_defined_at_import():
    """absl's global FLAGS holds no flag of dcjax's after importing the
    commands (libraries such as orbax define their own), so the commands can
    share a process (a test, a notebook) without clashing."""
    code = ("from absl import flags\n"
            "import dcjax.main, dcjax.select, dcjax.report, dcjax.evaluate, dcjax.cli\n"
            "print(sorted(m for m in flags.FLAGS.flags_by_module_dict() if 'dcjax' in m))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "[]"


def test_hyphens_and_no_prefix_mean_absl_spellings():
    fv = flags.FlagValues()
    flags.DEFINE_bool("umap", None, "", flag_values=fv)
    flags.DEFINE_string("launch_selector", None, "", flag_values=fv)
    assert cli.normalize(["--no-umap", "--launch-selector", "consensus", "--show-config", "--config.a-b=c-d"], fv) \
        == ["--noumap", "--launch_selector", "consensus", "--show_config", "--config.a-b=c-d"]


def test_the_package_has_one_version_a_console_script_and_its_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["dcjax"] == "dcjax.cli:run"
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dcjax.__version__"}
    assert {"cuda", "umap", "tfds", "test"} <= set(project["project"]["optional-dependencies"])
    assert any(r.startswith("jax[cuda12]") for r in project["project"]["optional-dependencies"]["cuda"])
    assert "version" not in (REPO / "setup.py").read_text().split('"""')[-1]
    assert (REPO / "dcjax" / "py.typed").exists()


def test_explain_is_dispatched_to_its_module(monkeypatch, capsys):
    """`dcjax explain` runs `dcjax.explain.main(argv)` (its module comes from
    another branch): the arguments without the program name."""
    import types
    explain = types.ModuleType("dcjax.explain")
    explain.main = lambda argv: print("explain", argv)
    monkeypatch.setitem(sys.modules, "dcjax.explain", explain)
    assert cli.run(["explain", "--workdir", "w"]) == 0
    assert capsys.readouterr().out == "explain ['--workdir', 'w']\n"
