"""The summary table logged to an offline W&B run inside the report folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medsweep.report import build_report


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every W&B file in tmp and the run offline."""
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    return home


def test_summary_logged_as_offline_wandb_table(
    tmp_path: Path, sweep_factory: Callable[..., Path], offline_wandb: Path
) -> None:
    root = sweep_factory(tmp_path / "multirun", wandb_project="medsweep-test")
    report = build_report(root, figures=False)
    runs = sorted((root / "report" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert report.wandb_dir == runs[0]
    assert list(runs[0].glob("run-*.wandb"))
    tables = {p.name.split("_")[0]: p for p in (runs[0] / "files" / "media" / "table").glob("*")}
    assert set(tables) == {"summary", "stats"}
    summary = json.loads(tables["summary"].read_text())
    column = summary["columns"].index("config_key")
    assert [row[column] for row in summary["data"]] == ["loss=focal", "loss=ce", "loss=bce"]
    meta = json.loads((root / "report" / "report.json").read_text())
    assert meta["files"]["wandb"].startswith("wandb/offline-run-")


def test_no_wandb_option_and_runs_without_wandb(
    tmp_path: Path, sweep_factory: Callable[..., Path], offline_wandb: Path
) -> None:
    root = sweep_factory(tmp_path / "with", wandb_project="medsweep-test")
    report = build_report(root, figures=False, wandb=False)
    assert report.wandb_dir is None
    assert not (root / "report" / "wandb").exists()
    plain = sweep_factory(tmp_path / "without")
    assert build_report(plain, figures=False).wandb_dir is None
    assert not (plain / "report" / "wandb").exists()
