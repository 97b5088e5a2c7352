"""The notebooks execute top to bottom against the tiny run's MLflow store."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT


@pytest.mark.parametrize("name", ["data_tour.ipynb", "cost_quality.ipynb"])
def test_notebook_executes(name, tiny_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_run["tracking_uri"])
    monkeypatch.setenv("AUTOROUTE_DATA_DIR", str(tiny_run["data_dir"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
