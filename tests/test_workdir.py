"""The workdir is dcjax's: a marker makes it so, an unrelated non-empty
folder is refused in one line (unless allowed), a broken config.json is one
line and leaves no lock, one live run per folder (`is_locked`), and
config.json records the run's provenance."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from dcjax import config as config_lib
from dcjax import workdir as workdir_lib

REPO = Path(__file__).resolve().parents[1]


def users_folder(tmp_path) -> Path:
    folder = tmp_path / "mine"
    (folder / "report").mkdir(parents=True)
    (folder / "summary.json").write_text('{"mine": 1}')
    (folder / "report.html").write_text("<p>my report</p>")
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_an_unrelated_folder_is_refused_and_left_as_it_was(tmp_path):
    folder = users_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(workdir_lib.ForeignWorkdirError, match=r"mine is not empty and is not a dcjax workdir.*"
                       r"--config.allow_foreign_workdir=True"):
        with workdir_lib.claim(folder):
            pass
    assert snapshot(folder) == before   # no marker, no lock, no write probe


def test_allowed_foreign_folder_is_claimed_and_marked(tmp_path, caplog):
    folder = users_folder(tmp_path)
    with caplog.at_level("WARNING", logger="dcjax"), workdir_lib.claim(folder, allow_foreign=True):
        assert workdir_lib.is_locked(folder)
    assert (folder / workdir_lib.MARKER_FILE).is_file() and workdir_lib.is_own(folder)
    assert any("holds other files" in r.message for r in caplog.records)
    assert not list(folder.rglob(".dcjax-write-probe-*"))


@pytest.mark.parametrize("entries, own", [
    ((), True),                                            # empty
    (("dcjax.lock",), True),                               # a run killed before config.json
    (("config.json", "clustering/"), True),                # a run from before the marker
    (("dcjax-workdir.json", "notes.txt"), True),           # marked: dcjax's, whatever else is there
    (("notes.txt",), False),
    (("config.json",), True),                              # a run killed early; not dcjax's: check_config refuses it
])
def test_whose_folder(tmp_path, entries, own):
    folder = tmp_path / "w"
    folder.mkdir()
    for entry in entries:
        (folder / entry).mkdir() if entry.endswith("/") else (folder / entry).write_text("{}")
    assert workdir_lib.is_own(folder) is own


def test_a_non_json_config_is_one_line_and_leaves_no_lock(tmp_path):
    (tmp_path / "config.json").write_text("not json {")
    with pytest.raises(config_lib.ConfigError, match=r"config.json is not a dcjax config \(not JSON"):
        with workdir_lib.claim(tmp_path):
            pass
    assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_is_locked_sees_another_process(tmp_path):
    assert not workdir_lib.is_locked(tmp_path)
    code = ("import sys, time; from pathlib import Path; from dcjax import workdir\n"
            "with workdir.lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert workdir_lib.is_locked(tmp_path)
        assert workdir_lib.is_locked(tmp_path)   # the probe let go of it
    finally:
        holder.kill()
        holder.wait()
    assert not workdir_lib.is_locked(tmp_path)   # a killed holder's lock is stale


def test_config_json_records_provenance_and_a_rerun_is_no_change(tmp_path):
    config = tiny_config("dec")
    workdir_lib.write_config(config, tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    prov = stored["provenance"]
    assert {"dcjax", "git_revision", "jax", "jaxlib", "devices"} <= set(prov) and prov["devices"]
    workdir_lib.write_config(config, tmp_path)   # provenance is no setting: the same run continues
    changed = config.copy_and_resolve_references()
    changed.batch_size = 32
    with pytest.raises(config_lib.ConfigError, match=r"different configuration \(batch_size\)"):
        workdir_lib.write_config(changed, tmp_path)


def run_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "dcjax.main", "--config", "dec:smoke", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def test_the_command_line_refuses_a_foreign_workdir_and_a_broken_config_in_one_line(tmp_path):
    folder = users_folder(tmp_path)
    out = run_cli(tmp_path, f"--workdir={folder}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not a dcjax workdir" in out.stderr.strip().splitlines()[-1]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{oops")
    out = run_cli(tmp_path, f"--workdir={broken}")
    assert out.returncode == 2 and "not a dcjax config" in out.stderr and "Traceback" not in out.stderr
    assert not (broken / workdir_lib.LOCK_FILE).exists()


def test_atomic_writes_leave_the_old_content_or_the_new(tmp_path):
    import numpy as np
    from dcjax import checkpointing
    path = tmp_path / "selected_labels.npy"
    checkpointing.save_npy_atomic(path, np.arange(5))

    def dies_half_way(f):
        f.write(b"\x93NUMPY half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        checkpointing.write_bytes_atomic(path, dies_half_way)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), np.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["selected_labels.npy"]   # no temporary left
    checkpointing.save_npz_atomic(tmp_path / "a.npz", {"x": np.ones(2)})
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f["x"].tolist() == [1.0, 1.0]
