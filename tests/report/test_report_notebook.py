"""notebooks/analyze_sweep.ipynb executed on a small report."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from medsweep.report import build_report

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analyze_sweep.ipynb"


def test_notebook_draws_the_comparison(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_report(sweep, figures=False, wandb=False)
    monkeypatch.setenv("MEDSWEEP_REPORT_DIR", str(sweep / "report"))
    monkeypatch.delenv("MEDSWEEP_METRIC", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "MEDSWEEP_REPORT_DIR" in parameters[0].source
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "14 runs (13 ok) in 3 configurations; metric: val/auroc" in text
    assert "1 failed runs" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # fold scores, then mean ± std
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "ValueError: loss is nan at epoch 3" in tables
    assert "missing folds 3, 4" in tables
