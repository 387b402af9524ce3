"""Fault injection: a smoke run under each fault, against the uninterrupted run.

    python experiments/fault_injection.py [--root /work/runs/i22disk/faults] [--kills 20]
        [--out experiments/results/fault_injection.md]

Each fault is applied to real `python -m dcjax.main` processes (DCN, digits
subsample, smoke network, resume points every 2 epochs):

- SIGKILL at `--kills` random moments, half of them while orbax is writing a
  checkpoint (a `*.orbax-checkpoint-tmp*` folder exists), each followed by a
  resume (the next launch); after the last, a launch runs to the end;
- a truncated and a deleted file (the largest) in the newest resume point of a
  killed run, then a resume; and in a finished run's snapshot, then
  `dcjax.evaluate` and `dcjax.select`;
- one seed made to diverge (NaN weights from clustering epoch 3) in a 4-seed
  launch, then `dcjax.select`; and every seed diverging (pretraining lr 1e30);
- a read-only workdir (a read-only mount as root, else chmod), finished and fresh;
- a second launch on the same workdir, and a launch after the first is killed;
- a disk that fills up mid-run (a small tmpfs and a file that eats the rest;
  root only), then, with room again, the same command;
- the reading side: a read-only finished run (select, report), seeds
  diverging to +inf, select while training runs, a run killed in pretraining
  and one killed mid-clustering, 64 bytes overwritten in place in a resume point.

"Results equal" compares bit for bit the snapshots of every epoch, the
records' per-batch losses, the final model states and the summary with
those of the uninterrupted run (for a damaged snapshot: the scores of every
other epoch; for the diverging seed: the three healthy seeds). It prints the
table and writes it to --out. Finished scenarios are cached in
<root>/results.json, so an interrupted session continues.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dcjax import checkpointing  # noqa: E402

ARGS = ["--config", "configs/dcn_digits.py:smoke", "--config.dataset.subsample=400", "--config.batch_size=64",
        "--config.pretrain.epochs=4", "--config.clustering.epochs=6", "--config.kmeans.n_init=3",
        "--config.progress=False", "--config.checkpoint.resume_every=2", "--config.checkpoint.keep_resume_every=4",
        "--config.seed_parallelism=loop"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
IS_ROOT = os.geteuid() == 0


def launch(workdir: Path, *extra, seeds=2, log=None, child=None) -> subprocess.Popen:
    """`python -m dcjax.main` (or this script's --child-diverge wrapper) on `workdir`."""
    log = open(log or f"{workdir}.log", "a")
    flag = "--child-diverge-inf" if child and child[0] == "inf" else "--child-diverge"
    child = child[1:] if child and child[0] == "inf" else child
    head = [sys.executable, __file__, flag, *child, "--"] if child else [sys.executable, "-m", "dcjax.main"]
    return subprocess.Popen([*head, *ARGS, f"--config.seeds={seeds}", f"--workdir={workdir}", *extra],
                            cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def run(workdir: Path, *extra, **kw) -> int:
    return launch(workdir, *extra, **kw).wait(timeout=1800)


def tail(workdir: Path, n=3000) -> str:
    path = Path(f"{workdir}.log")
    return path.read_text()[-n:] if path.exists() else ""


def same_run(a: Path, b: Path, seeds=None) -> tuple[bool, str]:
    """Bit-for-bit comparison of two finished runs (optionally some seed indices)."""
    pick = (lambda v: np.asarray(v)) if seeds is None else (lambda v: np.asarray(v)[seeds])
    try:
        for phase in checkpointing.PHASES:
            epochs = checkpointing.list_epochs(a, phase)
            if epochs != checkpointing.list_epochs(b, phase):
                return False, f"{phase} epochs differ"
            with checkpointing.snapshot_reader(a, phase) as la, checkpointing.snapshot_reader(b, phase) as lb:
                for epoch in epochs:
                    sa, sb = la(epoch), lb(epoch)
                    if any(not np.array_equal(pick(sa[k]), pick(sb[k])) for k in sa):
                        return False, f"{phase} snapshot {epoch} differs"
            ra, rb = checkpointing.load_records(a, phase), checkpointing.load_records(b, phase)
            if [r["epoch"] for r in ra] != [r["epoch"] for r in rb] or any(
                    not np.array_equal(pick(x["batch_loss"][k]), pick(y["batch_loss"][k]))
                    for x, y in zip(ra, rb) for k in x["batch_loss"]):
                return False, f"{phase} records differ"
            last = epochs[-1]
            sa, sb = checkpointing.load_state(a, last, phase), checkpointing.load_state(b, last, phase)
            import jax
            if any(not np.array_equal(pick(u), pick(v)) for u, v in zip(jax.tree.leaves(sa), jax.tree.leaves(sb))):
                return False, f"{phase} final state differs"
        ja, jb = (json.loads((w / "summary.json").read_text())["seeds"] for w in (a, b))
        if seeds is not None:
            ja, jb = [ja[i] for i in seeds], [jb[i] for i in seeds]
        if [dict(r, diverged=None) for r in ja] != [dict(r, diverged=None) for r in jb]:
            return False, "summary differs"
    except Exception as e:   # noqa: BLE001 -- a comparison that cannot read is a failed one
        return False, f"{type(e).__name__}: {e}"
    return True, "equal"


def wait_for(predicate, proc: subprocess.Popen, timeout=900, poll=0.02) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def kill(proc: subprocess.Popen):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def saving(workdir: Path) -> bool:
    return any(workdir.glob("*/*/*.orbax-checkpoint-tmp*"))


def largest_file(item: Path) -> Path:
    return max((p for p in item.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def row(fault, runs, survived, equal, lost, note=""):
    return {"fault": fault, "runs": runs, "survived": survived, "equal": equal, "lost": lost, "note": note}


# ---------------------------------------------------------------------------- the faults

def sigkill(root: Path, reference: Path, kills: int, duration: float, rng: random.Random) -> dict:
    workdir = root / "sigkill"
    shutil.rmtree(workdir, ignore_errors=True)
    failures, during_save, finished_early, killed, launches = [], 0, 0, 0, 0
    while killed < kills:
        proc = launch(workdir)
        launches += 1
        if killed % 2:    # during a save: the moment a checkpoint's temporary folder appears
            wait_for(lambda: saving(workdir), proc, poll=0.002)
        else:             # at a random moment of a run's life
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.5, duration))
        if proc.poll() is None:
            during_save += saving(workdir)
            kill(proc)
            killed += 1
        elif proc.returncode == 0:      # it ended before the kill: start over for the next moments
            finished_early += 1
            shutil.rmtree(workdir)
        else:
            failures.append(f"launch {launches} failed (rc {proc.returncode})")
            killed += 1                 # counted, so that a broken resume cannot loop forever
    final = run(workdir)
    launches += 1
    if final != 0:
        failures.append(f"the last launch failed (rc {final})")
    equal, why = same_run(workdir, reference) if final == 0 else (False, tail(workdir, 500))
    return row(f"SIGKILL at {kills} random moments ({during_save} while a checkpoint was being written), "
               "each followed by a resume", launches, f"{kills - len(failures)}/{kills}",
               "yes" if equal else f"no: {why}", "none" if equal else "?",
               "; ".join(failures + ([f"{finished_early} launches ended before their moment came (not counted)"]
                                     if finished_early else [])))


def damaged_resume_point(root: Path, reference: Path, how: str) -> dict:
    workdir = root / f"resume_{how}"
    shutil.rmtree(workdir, ignore_errors=True)
    proc = launch(workdir)   # killed once clustering resume point 4 exists (resume points: 0, 2, 4)
    wait_for(lambda: 4 in _steps(workdir / "clustering" / "resume"), proc)
    kill(proc)
    newest = workdir / "clustering" / "resume" / str(max(_steps(workdir / "clustering" / "resume")))
    victim = largest_file(newest)
    os.truncate(victim, victim.stat().st_size // 2) if how == "truncated" else victim.unlink()
    rc = run(workdir)
    warned = "skipped: resuming from the resume point before it" in tail(workdir, 10 ** 6)
    equal, why = same_run(workdir, reference) if rc == 0 else (False, tail(workdir, 500))
    return row(f"{how} file in the newest resume point ({newest.name}), then the same command",
               2, "1/1" if rc == 0 and warned else "0/1", "yes" if equal else f"no: {why}",
               "none: it resumed from the resume point before and replayed the epochs after it" if equal else "?",
               f"warning naming the skipped resume point: {warned}")


def _steps(path: Path) -> list[int]:
    return sorted(int(p.name) for p in path.glob("*") if p.name.isdigit()) if path.exists() else []


def damaged_snapshot(root: Path, reference: Path, how: str) -> dict:
    workdir = root / f"snapshot_{how}"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns("scores.csv", "selection.json",
                                                                      "keep_epochs.json"))
    from dcjax import checkpointing
    item = checkpointing.epoch_dir(workdir, 3)   # the block item holding epoch 3 (and its neighbours)
    lost = [e for e in checkpointing.list_epochs(workdir) if checkpointing.epoch_dir(workdir, e) == item]
    victim = largest_file(item)
    os.truncate(victim, victim.stat().st_size // 2) if how == "truncated" else victim.unlink()
    logs = []
    for module, extra in (("dcjax.evaluate", []), ("dcjax.select", ["--selector", "pooled_silhouette"])):
        out = subprocess.run([sys.executable, "-m", module, f"--workdir={workdir}", *extra], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=1800)
        logs.append((out.returncode, out.stdout + out.stderr))
    said = all("damaged" in text and ("epoch 3" in text or "[3]" in text) for _, text in logs)
    import pandas as pd
    ours, theirs = pd.read_csv(workdir / "scores.csv"), pd.read_csv(reference / "scores.csv")
    key = ["seed", "phase", "epoch"]
    theirs = theirs[~((theirs.phase == "clustering") & theirs.epoch.isin(lost))]
    columns = [c for c in ours.columns if c not in ("eval_seconds",)]
    merged = ours.merge(theirs, on=key, suffixes=("", "_ref"))
    after = (merged.phase == "clustering") & (merged.epoch == max(lost) + 1)   # its previous epoch is damaged
    for c in ("ari_vs_previous", "nmi_vs_previous", "changed_fraction"):
        merged.loc[after, [c, f"{c}_ref"]] = np.nan
    equal = len(ours) == len(theirs) == len(merged) and all(
        np.allclose(merged[c], merged[f"{c}_ref"], equal_nan=True, rtol=0, atol=0)
        for c in columns if c not in key and merged[c].dtype.kind == "f")
    return row(f"{how} file in a snapshot item (clustering epochs {min(lost)}-{max(lost)}, one block), "
               "then dcjax.evaluate and dcjax.select",
               2, f"{sum(rc == 0 for rc, _ in logs)}/2", "yes (every other epoch's scores)" if equal else "no",
               f"those epochs' snapshots: left out of scores.csv and of the candidates (and epoch {max(lost) + 1}'s "
               "stability against the last)",
               f"both say which epoch is damaged: {said}")


def diverging_seed(root: Path, reference4: Path) -> dict:
    workdir = root / "diverge"
    shutil.rmtree(workdir, ignore_errors=True)
    rc = run(workdir, seeds=4, child=["2", "3"])
    equal, why = same_run(workdir, reference4, seeds=[0, 1, 3]) if rc == 0 else (False, tail(workdir, 500))
    summary = json.loads((workdir / "summary.json").read_text()) if rc == 0 else {}
    select = subprocess.run([sys.executable, "-m", "dcjax.select", f"--workdir={workdir}", "--selector",
                             "pooled_silhouette"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1800)
    flagged = (summary.get("diverged_seeds") == [2] and "seed 2 diverged" in select.stdout
               and "diverged" in json.dumps(checkpointing.load_records(workdir)[-1]))
    return row("one seed (of 4) diverging: NaN weights from clustering epoch 3", 1, "1/1" if rc == 0 else "0/1",
               "yes (seeds 0, 1, 3)" if equal else f"no: {why}",
               "seed 2's clustering epochs 3-6: frozen at epoch 2", f"flagged in records, summary.json, "
               f"dcjax.select: {flagged}")


def every_seed_diverging(root: Path) -> dict:
    workdir = root / "diverge_all"
    shutil.rmtree(workdir, ignore_errors=True)
    rc = run(workdir, "--config.pretrain.learning_rate=1e30")
    said = "every seed has now diverged" in tail(workdir)
    return row("every seed diverging (pretraining lr 1e30)", 1, "ends non-zero, as it should" if rc and said
               else f"rc {rc}", "n/a", "the run: nothing finite to keep", f"exit code {rc}")


@contextlib.contextmanager
def read_only(path: Path):
    if IS_ROOT:   # root writes through permissions: a read-only bind mount
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def read_only_workdir(root: Path, reference: Path) -> dict:
    workdir = root / "read_only"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(reference, workdir)
    (workdir / "fresh").mkdir()
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    results = []
    with read_only(workdir):
        for target in (workdir, workdir / "fresh" / "run"):
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "dcjax.main", *ARGS, "--config.seeds=2",
                                   f"--workdir={target}"], cwd=REPO, env=ENV, capture_output=True, text=True)
            results.append((proc.returncode, "cannot write to the workdir" in proc.stdout + proc.stderr,
                            time.time() - t0))
    unchanged = before == {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    refused = all(rc != 0 and said for rc, said, _ in results)
    return row("read-only workdir (a finished run, and a new run in it)", 2,
               "2/2 refused before compute" if refused else "no", "yes: no file changed" if unchanged else "no",
               "none", f"refused after {', '.join(f'{s:.1f} s' for *_, s in results)} "
                       f"({'read-only mount' if IS_ROOT else 'chmod'})")


def second_launch(root: Path, reference: Path) -> dict:
    workdir = root / "second"
    shutil.rmtree(workdir, ignore_errors=True)
    first = launch(workdir)
    wait_for(lambda: (workdir / "pretrain" / "records.jsonl").exists(), first)
    first.send_signal(signal.SIGSTOP)   # frozen, lock held: a smoke run could otherwise end before its kill
    t0 = time.time()
    second = subprocess.run([sys.executable, "-m", "dcjax.main", *ARGS, "--config.seeds=2", f"--workdir={workdir}"],
                            cwd=REPO, env=ENV, capture_output=True, text=True)
    refused_after = time.time() - t0
    named = f"pid {first.pid}" in second.stdout + second.stderr
    kill(first)                     # the first killed: its lock is stale, the next launch takes it over
    third = run(workdir)
    took_over = f"taking over the lock of pid {first.pid}" in tail(workdir, 10 ** 6)
    equal, why = same_run(workdir, reference) if third == 0 else (False, tail(workdir, 500))
    return row("second launch on the same workdir; then the first killed and the command run again", 3,
               "yes" if second.returncode != 0 and named and took_over and third == 0 else "no",
               "yes" if equal else f"no: {why}", "none",
               f"second refused in {refused_after:.1f} s naming the first's pid: {named}; "
               f"stale lock taken over: {took_over}")


def fill(path: Path, rate: float | None, stop=lambda: False):
    """Write zeros into `path` until the disk is full: at once, or at `rate` bytes/s."""
    chunk = 65536
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as filler:
        while not stop():
            filler.write(b"\0" * chunk)
            if rate:
                time.sleep(chunk / rate)


def full_disk(root: Path, reference: Path, rate: float | None) -> dict:
    how = "at once" if rate is None else f"at {rate / 1e6:.0f} MB/s, while the run writes"
    if not IS_ROOT:
        return row(f"disk full mid-run ({how})", 0, "skipped (needs root to mount a small tmpfs)", "", "")
    mount = root / "tmpfs"
    mount.mkdir(exist_ok=True)
    need = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(need * 1.5)}", "tmpfs", str(mount)], check=True)
    log = root / f"full_disk_{'now' if rate is None else 'gradual'}.log"
    try:
        workdir = mount / "run"
        proc = launch(workdir, log=log)
        wait_for(lambda: (workdir / "clustering" / "records.jsonl").exists(), proc)   # mid-run: clustering began
        import threading   # another writer takes the rest of the disk
        filler = threading.Thread(target=fill, args=(mount / "filler", rate, lambda: proc.poll() is not None))
        filler.start()
        rc = proc.wait(timeout=1800)
        filler.join()
        text = log.read_text()
        said = [line for line in text.splitlines() if ": error: " in line and "is full" in line]
        clear = bool(said) and "run the same command again" in said[-1]   # dcjax's own line (orbax logs its threads' tracebacks)
        leftovers = list(workdir.rglob("*orbax-checkpoint-tmp*"))
        complete = True
        for phase in checkpointing.PHASES:
            with contextlib.suppress(FileNotFoundError):
                for epoch in checkpointing.list_epochs(workdir, phase):
                    try:
                        checkpointing.load_snapshot(workdir, epoch, phase)
                    except checkpointing.DamagedCheckpointError:
                        complete = False
        (mount / "filler").unlink()
        again = launch(workdir, log=log).wait(timeout=1800)
        equal, why = same_run(workdir, reference) if again == 0 else (False, text[-500:])
        stop = said[-1] if said else ""
        path = ("the check before a save" if "nothing of that epoch was written" in stop else
                "the check before training (the disk filled before the first epoch)" if "are free" in stop else
                "a failed write (orbax, ENOSPC)" if "RESOURCE_EXHAUSTED" in stop or "No space left" in stop else
                "a failed write (records, ENOSPC)" if "Errno 28" in stop else "?")
        return row(f"disk full mid-run: another file fills a tmpfs {how}; then, with room again, the same command",
                   2, "yes" if rc != 0 and clear and complete and not leftovers and again == 0 else f"no (rc {rc})",
                   "yes" if equal else f"no: {why}", "none",
                   f"stopped by {path}; clear message: {clear}; temporaries left: {len(leftovers)}; "
                   f"every checkpoint readable: {complete}")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------------------- driver

def child_diverge(index: int, from_epoch: int, argv: list[str], infinite: bool = False):
    """dcjax.main with seed `index` diverging from clustering epoch `from_epoch`
    on: NaN weights, or (`infinite`) a +inf loss."""
    from dcjax import main as dcjax_main, train
    from dcjax.testing import infinite_loss, poisoned

    from dcjax import replay
    train.make_train = replay.make_train = (infinite_loss if infinite else poisoned)(train.make_train, index,
                                                                                       from_epoch)
    dcjax_main.main(argv)


# ---------------------------------------------------------------------------- the reading side

def read(module: str, workdir: Path, *extra, timeout=900) -> tuple[int | str, str, float]:
    """`python -m dcjax.<module> --workdir W`: (exit code, or 'hung' past `timeout`; output; seconds)."""
    t0 = time.time()
    try:
        out = subprocess.run([sys.executable, "-m", module, f"--workdir={workdir}", *extra], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hung", "", time.time() - t0
    return out.returncode, out.stdout + out.stderr, time.time() - t0


def one_line_error(text: str) -> bool:
    return len([line for line in text.splitlines() if "error" in line.lower()]) == 1 and "Traceback" not in text


def unrelated_workdir(root: Path) -> dict:
    """A user's own non-empty folder as --workdir: refused in one line, nothing
    in it touched; with allow_foreign_workdir the run goes ahead, with a warning."""
    workdir = root / "users_folder"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "report").mkdir(parents=True)
    (workdir / "notes").mkdir()
    for name, text in (("summary.json", '{"mine": 1}'), ("report.html", "<p>mine</p>"),
                       ("report/figure.png", "png"), ("notes/todo.txt", "mine")):
        (workdir / name).write_text(text)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    refused = subprocess.run([sys.executable, "-m", "dcjax.main", *ARGS, "--config.seeds=2", f"--workdir={workdir}"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    errors = [line for line in refused.stderr.splitlines() if ": error: " in line]
    untouched = before == {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    allowed = subprocess.run([sys.executable, "-m", "dcjax.main", *ARGS, "--config.seeds=2", f"--workdir={workdir}",
                              "--config.allow_foreign_workdir=True"], cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=1800)
    warned = "holds other files" in allowed.stdout + allowed.stderr
    held = refused.returncode == 2 and len(errors) == 1 and "not a dcjax workdir" in errors[0] and untouched
    return row("an unrelated, non-empty --workdir (a user's summary.json, report.html, report/, notes/)", 2,
               "1/1 refused in one line, exit 2" if held else f"no (rc {refused.returncode})",
               "yes: no file of theirs changed" if untouched else "no", "none",
               f"with --config.allow_foreign_workdir=True: exit {allowed.returncode}, warning: {warned}")


def read_only_run(root: Path, reference: Path) -> dict:
    """A finished, never-selected run behind a read-only mount: select and report."""
    workdir = root / "read_only_run"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns("scores.csv", "scored", "selection.json",
                                                                      "keep_epochs.json", "selected_labels.npy"))
    with read_only(workdir):
        results = [read(m, workdir, timeout=300) for m in ("dcjax.select", "dcjax.report")]
    held = all(rc == 2 and "read-only" in text and one_line_error(text) for rc, text, _ in results)
    return row("read-only finished run: dcjax.select, dcjax.report", 2, "2/2 one line, exit 2" if held else
               "; ".join(f"rc {rc}" for rc, *_ in results), "n/a", "none",
               f"ended after {', '.join(f'{s:.1f} s' for *_, s in results)}, none hung: "
               f"{all(rc != 'hung' for rc, *_ in results)}")


def inf_divergence(root: Path) -> dict:
    """Seed 2 of 4 reports a +inf loss from clustering epoch 3 on (the driver's
    view of a learning rate far too high), then select and report."""
    workdir = root / "diverge_inf"
    shutil.rmtree(workdir, ignore_errors=True)
    rc = run(workdir, seeds=4, child=["inf", "2", "3"])
    summary = json.loads((workdir / "summary.json").read_text()) if rc == 0 else {}
    infinite = any(np.isinf(np.asarray(v, float)).any() for r in checkpointing.load_records(workdir)
                   for v in r["loss"].values())
    results = [read(m, workdir) for m in ("dcjax.select", "dcjax.report")]
    held = rc == 0 and all(code == 0 for code, *_ in results)
    return row("a seed diverging to +inf (seed 2 of 4, from clustering epoch 3), then dcjax.select and dcjax.report",
               3, "3/3" if held else f"train rc {rc}; " + ", ".join(str(c) for c, *_ in results),
               "n/a", f"the diverged seeds' later epochs: seeds {summary.get('diverged_seeds')}",
               f"+inf in the records: {infinite}; select names the seed: "
               f"{all(f'seed {s} diverged' in results[0][1] for s in summary.get('diverged_seeds', []))}")


def in_progress(root: Path) -> dict:
    """dcjax.select while the run trains: it reads what is there and says the run is still running."""
    workdir = root / "in_progress"
    shutil.rmtree(workdir, ignore_errors=True)
    proc = launch(workdir, "--config.clustering.epochs=400")   # long enough to be read while it runs
    wait_for(lambda: len(checkpointing.load_records(workdir, "clustering")) >= 2, proc)
    rc, text, seconds = read("dcjax.select", workdir)
    still = proc.poll() is None
    finished = proc.wait(timeout=1800)
    said = "training is still running" in text
    damaged = "damaged" in text
    return row("dcjax.select while training runs (400 clustering epochs; read after epoch 2)", 2,
               "1/1" if rc == 0 and finished == 0 else f"select rc {rc}, train rc {finished}", "n/a", "none",
               f"says the run is in progress: {said}; an epoch called damaged: {damaged}; "
               f"training still running when select ended: {still} ({seconds:.1f} s)")


def killed_then_selected(root: Path, when: str) -> dict:
    """Killed in pretraining (no candidate yet) or mid-clustering (incomplete), then dcjax.select."""
    workdir = root / f"killed_{when}"
    shutil.rmtree(workdir, ignore_errors=True)
    proc = launch(workdir)
    if when == "pretraining":
        wait_for(lambda: len(checkpointing.load_records(workdir, "pretrain")) >= 2, proc)
    else:
        wait_for(lambda: len(checkpointing.load_records(workdir, "clustering")) >= 3, proc)
    kill(proc)
    rc, text, _ = read("dcjax.select", workdir)
    if when == "pretraining":
        held = rc == 2 and one_line_error(text) and "no clustering epoch to choose from yet" in text \
            and not (workdir / "selected_labels.npy").exists()
        return row("killed in pretraining, then dcjax.select", 2, "1/1 refused in one line" if held else f"rc {rc}",
                   "n/a", "none", "no selected_labels.npy written: "
                                  f"{not (workdir / 'selected_labels.npy').exists()}")
    held = rc == 0 and "the run is incomplete" in text and "of 6 epochs" in text
    return row("killed mid-clustering, then dcjax.select", 2, "1/1" if held else f"rc {rc}", "n/a", "none",
               "says which phase and how many of how many epochs: " + str("of 6 epochs" in text))


def overwritten_resume_point(root: Path, reference: Path) -> dict:
    """64 bytes overwritten in place in the newest resume point (size unchanged), then the same command."""
    workdir = root / "resume_overwritten"
    shutil.rmtree(workdir, ignore_errors=True)
    proc = launch(workdir)
    wait_for(lambda: 4 in _steps(workdir / "clustering" / "resume"), proc)
    kill(proc)
    newest = workdir / "clustering" / "resume" / str(max(_steps(workdir / "clustering" / "resume")))
    victim = largest_file(newest)
    with open(victim, "r+b") as f:
        f.seek(victim.stat().st_size // 2)
        chunk = f.read(64)
        f.seek(-len(chunk), 1)
        f.write(bytes(b ^ 0xFF for b in chunk))
    rc = run(workdir)
    warned = "does not match its checksum" in tail(workdir, 10 ** 6) or "skipped" in tail(workdir, 10 ** 6)
    equal, why = same_run(workdir, reference) if rc == 0 else (False, tail(workdir, 500))
    return row(f"64 bytes overwritten in place in the newest resume point ({newest.name}), then the same command",
               2, "1/1" if rc == 0 else "0/1", "yes" if equal else f"no: {why}",
               "none: it resumed from the resume point before" if equal else "?",
               f"warning naming the damaged resume point: {warned} (sealed: "
               f"{(newest / checkpointing.CHECKSUMS).exists() if newest.exists() else 'gone'})")


def table(rows: list[dict]) -> str:
    lines = ["| fault | runs | survived | results equal to the uninterrupted run | data lost | notes |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['fault']} | {r['runs']} | {r['survived']} | {r['equal']} | {r['lost']} | {r['note']} |"
              for r in rows]
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("--child-diverge", "--child-diverge-inf"):
        split = sys.argv.index("--")
        return child_diverge(int(sys.argv[2]), int(sys.argv[3]), sys.argv[split + 1:],
                             infinite=sys.argv[1] == "--child-diverge-inf")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="/work/runs/fault_injection")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="experiments/results/fault_injection.md")
    args = ap.parse_args()
    import logging
    logging.getLogger("absl").setLevel(logging.ERROR)   # orbax's notes on every read-only reader
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "results.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    started = time.time()

    reference, reference4 = root / "reference", root / "reference4"
    durations = {}
    for workdir, seeds in ((reference, 2), (reference4, 4)):
        if not (workdir / "summary.json").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            t0 = time.time()
            assert run(workdir, seeds=seeds) == 0, tail(workdir)
            durations[workdir.name] = time.time() - t0
    if not (reference / "scores.csv").exists():
        subprocess.run([sys.executable, "-m", "dcjax.evaluate", f"--workdir={reference}"], cwd=REPO, env=ENV,
                       check=True, capture_output=True)
    duration = durations.get("reference", done.get("_duration", 60.0))
    done["_duration"] = duration
    rng = random.Random(args.seed)
    scenarios = {
        "sigkill": lambda: sigkill(root, reference, args.kills, duration, rng),
        "resume_truncated": lambda: damaged_resume_point(root, reference, "truncated"),
        "resume_deleted": lambda: damaged_resume_point(root, reference, "deleted"),
        "snapshot_truncated": lambda: damaged_snapshot(root, reference, "truncated"),
        "snapshot_deleted": lambda: damaged_snapshot(root, reference, "deleted"),
        "diverge": lambda: diverging_seed(root, reference4),
        "diverge_all": lambda: every_seed_diverging(root),
        "read_only": lambda: read_only_workdir(root, reference),
        "second_launch": lambda: second_launch(root, reference),
        "full_disk": lambda: full_disk(root, reference, rate=None),
        "full_disk_gradual": lambda: full_disk(root, reference, rate=2e6),
        "unrelated_workdir": lambda: unrelated_workdir(root),
        "read_only_run": lambda: read_only_run(root, reference),
        "diverge_inf": lambda: inf_divergence(root),
        "in_progress": lambda: in_progress(root),
        "killed_pretraining": lambda: killed_then_selected(root, "pretraining"),
        "killed_clustering": lambda: killed_then_selected(root, "clustering"),
        "resume_overwritten": lambda: overwritten_resume_point(root, reference),
    }
    for name, scenario in scenarios.items():
        if name not in done:
            t0 = time.time()
            done[name] = scenario() | {"seconds": round(time.time() - t0)}
            cache.write_text(json.dumps(done, indent=2))
            print(f"{name}: {done[name]}", flush=True)
    text = table([done[name] for name in scenarios])
    print(text)
    Path(args.out).write_text(
        "# Fault injection\n\n`python experiments/fault_injection.py` (" + time.strftime("%Y-%m-%d") + f"; "
        f"this session {time.time() - started:.0f} s; a smoke run alone takes {duration:.0f} s here, startup "
        "and compilation included). Smoke runs: DCN on 400 digits, 2 seeds (4 for the diverging seed), "
        "4 + 6 epochs, resume points every 2 epochs.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
