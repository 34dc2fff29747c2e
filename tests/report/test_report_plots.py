"""Report figures: training curves and fold scores."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from medsweep.report import collect_runs
from medsweep.report.plots import plot_fold_scores, plot_history, read_history


def _history(path: Path) -> Path:
    path.write_text(
        "epoch,train/loss,train/acc,val/loss,val/acc,val/auroc,lr\n"
        "0,1.0,0.5,,,,0.01\n"
        "0,,,1.2,0.4,0.6,\n"
        "1,0.5,0.7,,,,0.01\n"
        "1,,,0.9,0.6,0.7,\n"
        "2,0.3,0.9,,,,0.001\n"
    )
    return path


def test_read_history_merges_train_and_val_rows(tmp_path: Path) -> None:
    history = read_history(_history(tmp_path / "history.csv"))
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["train/loss"].tolist() == [1.0, 0.5, 0.3]
    assert history["val/loss"].tolist()[:2] == [1.2, 0.9]
    assert history["val/loss"].isna().tolist() == [False, False, True]


def test_plot_history_writes_a_png(tmp_path: Path) -> None:
    out = plot_history(
        _history(tmp_path / "history.csv"),
        tmp_path / "fig" / "run.png",
        monitor="val/auroc",
        best_epoch=1,
        title="loss=ce — fold 0",
    )
    assert out == tmp_path / "fig" / "run.png"
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400  # two panels


def test_plot_history_without_usable_columns_draws_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("epoch,lr\n0,0.1\n1,0.1\n")
    assert plot_history(path, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_plot_fold_scores(sweep: Path, tmp_path: Path) -> None:
    runs = collect_runs(sweep)
    out = plot_fold_scores(
        runs, "val/auroc", tmp_path / "scores.png", order=["loss=focal", "loss=ce", "loss=bce"]
    )
    assert out is not None
    assert imread(out).shape[0] > 100
    assert plot_fold_scores(runs, "val/unknown", tmp_path / "x.png") is None


@pytest.mark.parametrize("metric", ["val/acc", "test/acc"])
def test_plot_fold_scores_for_other_metrics(sweep: Path, tmp_path: Path, metric: str) -> None:
    runs = collect_runs(sweep)
    assert plot_fold_scores(runs, metric, tmp_path / "s.png").is_file()
