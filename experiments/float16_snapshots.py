"""Do the scores and the choices move when snapshots hold float16 embeddings?

    python experiments/float16_snapshots.py RUN [RUN ...] [--root /tmp/f16]

For each finished run (float32 snapshots): two copies are read by the
product's own `dcjax select` path, one as stored and one with every
embedding rounded to float16 as it is read (what
`--config.checkpoint.embedding_dtype=float16` would have stored). Prints,
per run, the largest difference of each score and whether the per-seed
epochs, the launch's choice and its labels are the same; writes the table
to experiments/results/float16_snapshots.md.
"""
import argparse
import contextlib
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dcjax import select
from dcjax import run as run_lib

REPO = Path(__file__).resolve().parents[1]
KEY = ["seed", "phase", "epoch"]
FRESH = shutil.ignore_patterns("scores.csv", "scored", "selection.json", "keep_epochs.json", "selected_labels.npy")


def read(workdir: Path, float16: bool) -> dict:
    stream = run_lib.RunRecord.stream

    def rounded(self, phase, epochs):
        for epoch, snap in stream(self, phase, epochs):
            if snap is not None:
                snap = dict(snap, embedding=np.asarray(snap["embedding"]).astype(np.float16).astype(np.float32))
            yield epoch, snap
    run_lib.RunRecord.stream = rounded if float16 else stream
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return select.main(["--workdir", str(workdir)])
    finally:
        run_lib.RunRecord.stream = stream


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--root", default="/tmp/float16_snapshots")
    args = ap.parse_args()
    rows = []
    for source in map(Path, args.runs):
        copies = {}
        for name, f16 in (("float32", False), ("float16", True)):
            copies[name] = Path(args.root) / f"{source.name}_{name}"
            shutil.rmtree(copies[name], ignore_errors=True)
            shutil.copytree(source, copies[name], ignore=FRESH)
            copies[name] = (copies[name], read(copies[name], f16))
        (w32, r32), (w16, r16) = copies["float32"], copies["float16"]
        a, b = (pd.read_csv(w / "scores.csv").set_index(KEY) for w in (w32, w16))
        cols = [c for c in a.columns if a[c].dtype.kind == "f" and c != "eval_seconds" and c in b]
        diff = (a[cols] - b.loc[a.index, cols]).abs().max()
        rel = ((a[cols] - b.loc[a.index, cols]).abs() / a[cols].abs().clip(lower=1e-12)).max()
        same_seeds = [(s["seed"], s["epoch"]) for s in r32["seeds"]] == [(s["seed"], s["epoch"]) for s in r16["seeds"]]
        moved = sum(x["epoch"] != y["epoch"] for x, y in zip(r32["seeds"], r16["seeds"]))
        rows.append({"run": source.name, "seeds": len(r32["seeds"]), "selector": r32["selector"],
                     "largest score difference": f"{diff.max():.2g} ({diff.idxmax()})",
                     "largest relative": f"{rel.max():.2g} ({rel.idxmax()})",
                     "per-seed epochs the same": f"{same_seeds} ({moved} moved)",
                     "launch choice the same": r32["launch"]["candidate"] == r16["launch"]["candidate"],
                     "launch labels the same": bool(np.array_equal(np.load(w32 / "selected_labels.npy"),
                                                                 np.load(w16 / "selected_labels.npy")))})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = REPO / "experiments" / "results" / "float16_snapshots.md"
    out.write_text("# Float16 snapshot embeddings: do scores and choices move?\n\n"
                   f"`python experiments/float16_snapshots.py {' '.join(args.runs)}`: each run read twice by "
                   "`dcjax select` (its default selectors), once as stored (float32) and once with every "
                   "embedding rounded to float16 as it is read.\n\n" + markdown(table) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
