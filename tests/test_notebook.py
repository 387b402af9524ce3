"""The exploration notebook runs headless on a tiny run, so it cannot rot,
and draws with the report's figure functions, so it shows what report.html shows."""
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import tiny_config
from dcjax import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_run.ipynb"


def test_explore_run_notebook_executes(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config("dkm", seeds=3, clustering_epochs=8), workdir)
    monkeypatch.setenv("DCJAX_WORKDIR", str(workdir))
    # The kernel imports the dcjax under test (this checkout), installed or not.
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "dkm on digits - 3 seeds" in outputs
    assert "epoch 7 seed index 2" in outputs
    assert "selected" in outputs and "final 8" in outputs   # the label-free selection section ran
    assert (workdir / "selection.json").exists()
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    # every figure function drew: one image each, plus the one of the three panels
    assert len(figures) == sum(call.endswith("_figure") for call in report_calls(nb)) + 1


def report_calls(nb) -> list[str]:
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return re.findall(r"report\.(\w+_figure|plot_\w+)\(", code)


def test_notebook_draws_with_the_report_functions_only():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    calls = set(report_calls(nb))
    assert {"loss_figure", "scores_figure", "cluster_sizes_figure", "embeddings_figure", "evaluation_figure",
            "plot_embedding", "plot_cluster_sizes"} <= calls
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # No plotting code of its own: no matplotlib drawing calls, no projection.
    assert not re.search(r"\.(plot|scatter|stackplot|imshow|axvline|set_title)\(|PCA\(", code)
