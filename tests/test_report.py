"""The run report. A tiny 2-seed DKM run written by `python -m dcjax.main
--config.report=True` gets a page that holds every figure, each a PNG that
decodes, the same as the files beside it. The figures scale to 10 seeds x
250 epochs x 70,000 points (scatter plots subsample and say so). The page
chooses exactly as `python -m dcjax.select` does (per seed, then the launch)
and flags what a reader must know: a diverged seed, damaged epochs, a run no
better than chance, clusters that die. Training never imports the selection
or the report."""
import base64
import html
import importlib.util
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from dcjax import report

REPO = Path(__file__).resolve().parents[1]
SEEDS, CLUSTERING_EPOCHS = 2, 4
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny DKM run whose report the training command itself writes."""
    workdir = tmp_path_factory.mktemp("report") / "dkm"
    subprocess.run([sys.executable, "-m", "dcjax.main", "--config", "configs/dkm_digits.py:smoke",
                    f"--workdir={workdir}", f"--config.seeds={SEEDS}", "--config.dataset.subsample=300",
                    "--config.batch_size=64", "--config.pretrain.epochs=2",
                    f"--config.clustering.epochs={CLUSTERING_EPOCHS}", "--config.kmeans.n_init=2",
                    "--config.progress=False", "--config.report=True"],
                   cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    return workdir


class Images(HTMLParser):
    """Every <img> of a page (its attributes), and the text of its <h2> headings."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self._in_h2 = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_page_holds_every_figure_and_no_broken_image(workdir):
    page = (workdir / "report.html").read_text()
    parsed = Images()
    parsed.feed(page)
    expected = {"losses", "scores", "cluster_sizes", "embeddings_pca", "evaluation"}
    if importlib.util.find_spec("umap"):
        expected.add("embeddings_umap")
    assert {img["id"].removeprefix("img-") for img in parsed.images} == expected
    for img in parsed.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), img["id"]
        png = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert png.startswith(PNG)
        pixels = matplotlib.image.imread(io.BytesIO(png))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0   # drawn, not blank
        assert (workdir / "report" / f"{img['id'].removeprefix('img-')}.png").read_bytes() == png
    # Nothing but the embedded images: the page opens offline.
    assert "src='http" not in page and 'src="http' not in page
    assert any(h.startswith("Evaluation only") for h in parsed.headings)
    assert "Selected epochs (label-free)" in parsed.headings
    for seed in range(SEEDS):   # the selection's why, per seed
        assert f"<td class=''>{seed}</td>" in page
    assert page.count("class='why'") == SEEDS
    assert "The launch's choice (label-free)" in parsed.headings
    assert "--selector assessor_guarded</code> with the assessor shipped" in page


def test_the_report_selects_as_dcjax_select(workdir):
    """Same per-seed epochs, same launch choice and labels as the command, defaults and all."""
    from_report = json.loads((workdir / "selection.json").read_text())
    labels = np.load(workdir / "selected_labels.npy")
    subprocess.run([sys.executable, "-m", "dcjax.select", "--workdir", str(workdir)], cwd=REPO, check=True,
                   capture_output=True)
    from_select = json.loads((workdir / "selection.json").read_text())
    for key in ("selector", "assessor", "phase", "damaged_epochs"):
        assert from_report[key] == from_select[key], key
    assert [(s["seed"], s["epoch"], s["why"]) for s in from_report["seeds"]] == \
        [(s["seed"], s["epoch"], s["why"]) for s in from_select["seeds"]]
    assert {k: v for k, v in from_report["launch"].items()} == from_select["launch"]
    np.testing.assert_array_equal(np.load(workdir / "selected_labels.npy"), labels)


def test_warnings_flag_divergence_damage_and_chance(workdir):
    run = report.Run(workdir, progress=False)
    seeds = [dict(s) for s in run.selection["seeds"]]
    seeds[1]["diverged"] = {"phase": "clustering", "epoch": 3, "last_finite_epoch": 2}
    run.selection = {**run.selection, "seeds": seeds, "damaged_epochs": [1, 2],
                     "chance": {"looks_like_chance": True, "message": "WARNING: no better than chance"}}
    said = report.warnings(run)
    assert any(w.startswith("seed 1 diverged") and "clustering epoch 3" in w for w in said)
    assert any(w.startswith("epochs [1, 2] of the clustering phase left out") for w in said)
    assert report.chance_verdict(run) == ("WARNING: no better than chance", True)
    run.selection = {**run.selection, "chance": {"looks_like_chance": False, "message": "more than chance"}}
    assert report.chance_verdict(run) == ("more than chance", False)
    run.selection = {k: v for k, v in run.selection.items() if k != "chance"}
    assert report.chance_verdict(run) is None


def test_figures_scale_to_10_seeds_250_epochs_and_70000_points():
    seeds, epochs, n, k = 10, 251, 70_000, 10
    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"seed": s, "epoch": e, "silhouette": rng.normal()} for s in range(seeds)
                          for e in range(epochs)])
    fig = report.plot_curves(table, "silhouette", marks={"selected": {s: 10 * s for s in range(seeds)}})
    ax = fig.axes[0]
    assert len([line for line in ax.lines if line.get_label().startswith("seed")]) == seeds
    assert len(ax.collections[0].get_offsets()) == seeds   # a mark on every seed's curve
    # Above MAX_SEED_LINES seeds: grey lines and their median.
    more = pd.concat([table, table.assign(seed=table.seed + seeds)])
    assert any(line.get_label() == "median of 20 seeds" for line in report.plot_curves(more, "silhouette").axes[0].lines)

    z = rng.normal(size=(n, 10)).astype(np.float32)
    labels = rng.integers(0, k, n)
    fig = report.plot_embedding(z, labels, centers=rng.normal(size=(k, 10)))
    assert len(fig.axes[0].collections[0].get_offsets()) == report.MAX_POINTS
    assert f"{report.MAX_POINTS:,} of {n:,} points (random sample)" in [t.get_text() for t in fig.axes[0].texts]

    sizes = rng.integers(1, 100, (epochs, k))
    sizes[200:, :2] = 0     # two clusters die at epoch 200
    fig = report.plot_cluster_sizes(np.arange(epochs), sizes, selected=150)
    assert "8/10 clusters non-empty" in fig.axes[0].get_title()
    # A run whose clusters die (UNSEEN): how many are alive, on the right axis.
    active = np.where(np.arange(epochs) < 200, k, k - 2)
    fig = report.plot_cluster_sizes(np.arange(epochs), sizes, active=active)
    assert "8 of 10 clusters active" in fig.axes[0].get_title()
    assert fig.axes[0].title.get_color() == "black"   # dead clusters are empty by design: no alarm
    (step,) = fig.axes[1].lines
    np.testing.assert_array_equal(step.get_ydata(), active)


def test_umap_view_when_installed():
    pytest.importorskip("umap")
    z = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    fig = report.plot_embedding(z, np.arange(300) % 3, method="umap")
    assert "all 300 points" in [t.get_text() for t in fig.axes[0].texts]


def test_training_imports_neither_the_selection_nor_the_report():
    out = subprocess.run([sys.executable, "-c", "import sys, dcjax.train, dcjax.main; "
                          "print(sorted(m for m in sys.modules if m in ('dcjax.selection', 'dcjax.report', "
                          "'matplotlib')))"], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_like_chance_is_said_first_in_red(workdir, monkeypatch, tmp_path):
    """The page shows selection.json's chance verdict above everything when it
    says the run looks like chance (the report computes no verdict itself)."""
    select_run = report.selection.select_run
    message = "WARNING: no better than chance: the 2 seeds agree at ARI 0.010 < 0.3"
    monkeypatch.setattr(report.selection, "select_run", lambda *a, **k: select_run(*a, **k) | {
        "chance": {"looks_like_chance": True, "message": message}})
    page = report.write_report(workdir, umap=False, progress=False).read_text()
    assert page.index(f"<div class='chance'>{html.escape(message)}</div>") < page.index("<h2 id='selection'>")
