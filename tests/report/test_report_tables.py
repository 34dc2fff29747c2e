"""Per-fold and summary tables: numbers checked by hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medsweep.report import collect_runs, per_fold_table, summary_table, to_markdown
from medsweep.report.tables import missing_folds, summary_display


def test_per_fold_table_rows_and_hand_statistics(sweep: Path) -> None:
    runs = collect_runs(sweep)
    table = per_fold_table(runs, "loss=ce", ["val/acc", "val/auroc", "test/acc"])
    assert table.index.tolist() == ["Fold 0", "Fold 1", "Fold 2", "Fold 3", "Fold 4", "Mean", "Std"]
    assert table["val/acc"].iloc[:5].tolist() == [0.80, 0.82, 0.84, 0.86, 0.88]
    # val/acc: mean 4.20/5 = 0.84; std = sqrt((0.04^2+0.02^2+0+0.02^2+0.04^2)/4) = sqrt(0.001)
    assert table.loc["Mean", "val/acc"] == pytest.approx(0.84)
    assert table.loc["Std", "val/acc"] == pytest.approx(math.sqrt(0.001))
    # val/auroc 0.90..0.94: mean 0.92; std = sqrt((4+1+0+1+4)e-4 / 4) = sqrt(2.5e-4)
    assert table.loc["Mean", "val/auroc"] == pytest.approx(0.92)
    assert table.loc["Std", "val/auroc"] == pytest.approx(math.sqrt(2.5e-4))
    # test/acc 0.78, 0.80, 0.79, 0.81, 0.82: mean 4.00/5 = 0.80;
    # std = sqrt((0.02^2 + 0 + 0.01^2 + 0.01^2 + 0.02^2) / 4) = sqrt(0.001 / 4)
    assert table.loc["Mean", "test/acc"] == pytest.approx(0.80)
    assert table.loc["Std", "test/acc"] == pytest.approx(math.sqrt(0.00025))


def test_per_fold_table_uses_only_ok_runs(sweep: Path) -> None:
    runs = collect_runs(sweep)
    table = per_fold_table(runs, "loss=bce", ["val/auroc"])
    assert table.index.tolist() == ["Fold 0", "Fold 1", "Fold 2", "Mean", "Std"]
    # 0.85, 0.86, 0.87: mean 0.86, std sqrt((0.01^2 + 0 + 0.01^2) / 2) = 0.01
    assert table.loc["Mean", "val/auroc"] == pytest.approx(0.86)
    assert table.loc["Std", "val/auroc"] == pytest.approx(0.01)


def test_summary_sorted_by_metric_with_counts_and_flags(sweep: Path) -> None:
    runs = collect_runs(sweep)
    summary = summary_table(runs, ["val/auroc", "val/acc"], sort_by="val/auroc")
    assert summary["config_key"].tolist() == ["loss=focal", "loss=ce", "loss=bce"]
    focal = summary.iloc[0]
    # focal val/auroc 0.92, 0.92, 0.95, 0.93, 0.98: mean 4.70/5 = 0.94
    # deviations -0.02, -0.02, 0.01, -0.01, 0.04 -> std = sqrt(26e-4 / 4) = sqrt(6.5e-4)
    assert focal["val/auroc_mean"] == pytest.approx(0.94)
    assert focal["val/auroc_std"] == pytest.approx(math.sqrt(6.5e-4))
    bce = summary.iloc[2]
    assert (bce["n_ok"], bce["n_failed"], bce["n_folds"]) == (3, 1, 5)
    assert bce["missing_folds"] == "3,4"
    assert "missing folds 3, 4" in bce["notes"]
    assert "fold 3: ValueError: loss is nan at epoch 3" in bce["failed_runs"]
    assert summary.iloc[1]["notes"] == ""


def test_summary_sorts_losses_ascending(sweep: Path) -> None:
    runs = collect_runs(sweep)
    summary = summary_table(runs, ["val/loss"], sort_by="val/loss")
    # mean val/loss: focal 0.11, ce 0.16, bce 0.28 -> smallest first
    assert summary["config_key"].tolist() == ["loss=focal", "loss=ce", "loss=bce"]
    summary = summary_table(runs, ["val/loss"], sort_by="val/loss")
    assert summary["val/loss_mean"].is_monotonic_increasing


def test_summary_cells_read_mean_plus_minus_std(sweep: Path) -> None:
    runs = collect_runs(sweep)
    summary = summary_table(runs, ["val/auroc"], sort_by="val/auroc")
    text = summary_display(summary, ["val/auroc"])
    assert text["val/auroc"].tolist() == ["0.940 ± 0.025", "0.920 ± 0.016", "0.860 ± 0.010"]
    assert text["ok folds"].tolist() == ["5/5", "5/5", "3/5"]
    assert text["failed"].tolist() == [0, 0, 1]


def test_missing_folds_from_n_folds_and_from_gaps() -> None:
    group = pd.DataFrame(
        {
            "status": ["ok", "ok", "failed"],
            "fold": pd.array([0, 2, 3], dtype="Int64"),
            "n_folds": pd.array([5, 5, 5], dtype="Int64"),
        }
    )
    assert missing_folds(group) == [1, 3, 4]
    group["n_folds"] = pd.array([None, None, None], dtype="Int64")
    assert missing_folds(group) == [1, 3]
    group["fold"] = pd.array([None, None, None], dtype="Int64")
    assert missing_folds(group) == []


def test_missing_folds_when_a_job_never_ran(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    for fold in (0, 1, 3):
        make_run(tmp_path / str(fold), {"loss": "ce"}, fold, {"acc": 0.5}, n_folds=4)
    summary = summary_table(collect_runs(tmp_path), ["val/acc"])
    assert summary.loc[0, "missing_folds"] == "2"
    assert summary.loc[0, "n_failed"] == 0


def test_markdown_table_escapes_pipes_and_formats_numbers() -> None:
    table = pd.DataFrame({"name": ["a|b", None], "score": [0.91234, float("nan")]})
    assert to_markdown(table) == ("| name | score |\n| --- | --- |\n| a\\|b | 0.912 |\n| — | — |\n")
