"""The whole report: files written, failed runs and missing folds shown, nothing outside touched."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medsweep.report import Report, ReportError, build_report


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under root except those under skip."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            stat = path.stat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, sweep_factory: Callable[..., Path]
) -> tuple[Report, dict, dict]:
    """One report of the three-configuration sweep, with the files outside it before and after."""
    root = sweep_factory(tmp_path_factory.mktemp("built") / "multirun")
    before = _snapshot(root.parent, root / "report")
    report = build_report(root, wandb=False)
    after = _snapshot(root.parent, root / "report")
    return report, before, after


def test_writes_every_output(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    out = report.out_dir
    assert out == report.root / "report"
    for name in ("summary.md", "summary.csv", "folds.csv", "stats.csv", "stats.md", "report.html"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "per_config").iterdir()) == [
        "loss-bce.md",
        "loss-ce.md",
        "loss-focal.md",
    ]
    curves = sorted((out / "figures" / "curves").glob("*.png"))
    assert len(curves) == 14  # one per run, the failed one included (it has a history)
    assert (out / "figures" / "fold_scores_val_auroc.png").stat().st_size > 1000
    meta = json.loads((out / "report.json").read_text())
    assert (meta["metric"], meta["baseline"], meta["n_runs"], meta["n_failed"]) == (
        "val/auroc",
        "loss=ce",
        14,
        1,
    )


def test_nothing_outside_the_report_folder_changes(built: tuple[Report, dict, dict]) -> None:
    _, before, after = built
    assert before == after


def test_summary_files_hold_the_ranked_table(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    summary = pd.read_csv(report.out_dir / "summary.csv", keep_default_na=False)
    assert summary["config_key"].tolist() == ["loss=focal", "loss=ce", "loss=bce"]
    assert summary["val/auroc_mean"].tolist() == pytest.approx([0.94, 0.92, 0.86])
    assert summary.loc[2, "missing_folds"] == "3,4"
    md = (report.out_dir / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| loss=")]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| loss=focal", "| loss=ce", "| loss=bce"]
    assert "| 0.940 ± 0.025 |" in rows[0]
    assert "+0.020 [-0.009, +0.049]" in rows[0]
    folds = pd.read_csv(report.out_dir / "folds.csv")
    assert len(folds) == 14
    assert folds["val/acc"].iloc[:5].tolist() == [0.80, 0.82, 0.84, 0.86, 0.88]


def test_failed_run_is_listed_with_its_error_everywhere(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    out = report.out_dir
    error = "ValueError: loss is nan at epoch 3"
    for name in ("summary.md", "stats.md", "per_config/loss-bce.md", "report.html"):
        text = (out / name).read_text()
        assert "Failed runs" in text, name
        assert error in text, name
    assert error in (out / "summary.csv").read_text()
    folds = pd.read_csv(out / "folds.csv")
    assert folds.loc[folds["status"] == "failed", "error"].tolist() == [error]
    assert "None." in (out / "per_config" / "loss-ce.md").read_text()


def test_missing_folds_flagged(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    assert report.missing == {"loss=ce": [], "loss=focal": [], "loss=bce": [3, 4]}
    md = (report.out_dir / "summary.md").read_text()
    assert "loss=bce: no ok run for fold 3, 4" in md
    assert "missing folds 3, 4" in md
    assert "Missing folds: 3, 4" in (report.out_dir / "report.html").read_text()


def test_stats_files(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    stats = pd.read_csv(report.out_dir / "stats.csv")
    row = stats[(stats["config_key"] == "loss=focal") & (stats["metric"] == "val/auroc")].iloc[0]
    assert row["ci_low"] == pytest.approx(-0.0094486474, abs=1e-8)
    assert not row["significant"]
    acc = stats[(stats["config_key"] == "loss=focal") & (stats["metric"] == "val/acc")].iloc[0]
    assert acc["significant"]
    md = (report.out_dir / "stats.md").read_text()
    assert "Nadeau & Bengio" in md
    assert "## val/auroc" in md and "## test/acc" in md


def test_html_embeds_tables_and_existing_figures(built: tuple[Report, dict, dict]) -> None:
    report, _, _ = built
    html = (report.out_dir / "report.html").read_text()
    assert html.count("<table") >= 5
    assert "0.940 ± 0.025" in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert "figures/fold_scores_val_auroc.png" in sources
    assert len(sources) == 15
    assert all((report.out_dir / src).is_file() for src in sources)


def test_rebuild_ignores_its_own_report_and_custom_out(tmp_path: Path, sweep: Path) -> None:
    root = sweep
    build_report(root, wandb=False, figures=False)
    again = build_report(root, wandb=False, figures=False)
    assert len(again.runs) == 14
    inside = build_report(root, out=root / "analysis", wandb=False, figures=False)
    assert (root / "analysis" / "summary.md").is_file()
    assert len(inside.runs) == 14
    outside = build_report(root, out=tmp_path / "elsewhere", wandb=False, figures=False)
    assert (tmp_path / "elsewhere" / "report.html").is_file()
    assert len(outside.runs) == 14


def test_refuses_to_write_into_the_runs_folder(tmp_path: Path, sweep: Path) -> None:
    root = sweep
    for out in (root, tmp_path):
        with pytest.raises(ReportError, match="holds the runs"):
            build_report(root, out=out, wandb=False, figures=False)
    assert not (root / "summary.md").exists()


def test_metric_and_baseline_options(tmp_path: Path, sweep: Path) -> None:
    root = sweep
    report = build_report(
        root, metric="val/loss", baseline="loss=focal", wandb=False, figures=False
    )
    assert report.baseline == "loss=focal"
    assert report.higher_is_better is False
    assert report.summary["config_key"].tolist() == ["loss=focal", "loss=ce", "loss=bce"]
    assert set(report.stats["config_key"]) == {"loss=ce", "loss=bce"}
    with pytest.raises(ReportError, match=r"unknown metric 'val/dice'.*val/acc.*test/auroc"):
        build_report(root, metric="val/dice", wandb=False, figures=False)
    with pytest.raises(ReportError, match=r"unknown baseline 'loss=dice'.*loss=focal"):
        build_report(root, baseline="loss=dice", wandb=False, figures=False)


def test_default_config_is_the_default_baseline(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    for fold in range(3):
        make_run(
            tmp_path / str(fold), {"loss": "focal"}, fold, {"acc": 0.6 + fold / 100}, n_folds=3
        )
        make_run(tmp_path / str(fold + 3), {}, fold, {"acc": 0.5 + fold / 100}, n_folds=3)
    report = build_report(tmp_path, wandb=False, figures=False)
    assert report.metric == "val/acc"  # no val/auroc: the first available
    assert report.baseline == ""
    assert "(default)" in (tmp_path / "report" / "summary.md").read_text()


def test_report_of_only_failed_runs(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    make_run(tmp_path / "0", {"lr": 1}, 0, status="failed", error="RuntimeError: CUDA OOM")
    make_run(tmp_path / "1", {"lr": 2}, 0, status="failed", error="RuntimeError: NaN")
    report = build_report(tmp_path, wandb=False)
    assert report.metric is None
    assert len(report.failed) == 2
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "RuntimeError: CUDA OOM" in text and "RuntimeError: NaN" in text


def test_stale_figures_are_removed_on_rebuild(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    make_run(tmp_path / "0", {"lr": 1}, 0, {"acc": 0.5})
    make_run(tmp_path / "1", {"lr": 2}, 0, {"acc": 0.6})
    build_report(tmp_path, wandb=False)
    assert (tmp_path / "report" / "figures" / "curves" / "1.png").is_file()
    (tmp_path / "report" / "notes.txt").write_text("mine")
    for path in sorted((tmp_path / "1").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    os.rmdir(tmp_path / "1")
    build_report(tmp_path, wandb=False)
    assert (tmp_path / "report" / "figures" / "curves" / "0.png").is_file()
    assert not (tmp_path / "report" / "figures" / "curves" / "1.png").exists()
    assert (tmp_path / "report" / "notes.txt").read_text() == "mine"
