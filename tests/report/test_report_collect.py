"""Finding and loading runs, and configuration keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medsweep.report import (
    ReportError,
    collect_runs,
    config_labels,
    metric_columns,
    resolve_baseline,
)
from medsweep.report.configs import common_overrides, safe_names, split_config_key


def test_collects_every_run_in_job_order(sweep: Path) -> None:
    runs = collect_runs(sweep)
    assert runs["run"].tolist() == [str(i) for i in range(14)]  # 10 after 9, not after 1
    assert runs["config_key"].tolist() == ["loss=ce"] * 5 + ["loss=focal"] * 5 + ["loss=bce"] * 4
    assert runs["fold"].tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1, 2, 3]
    assert runs.loc[0, "val/acc"] == 0.80
    assert runs.loc[9, "val/auroc"] == 0.98
    assert runs.loc[0, "n_train"] == 800 and runs.loc[0, "n_val"] == 200
    assert runs.loc[0, "history"] == str(sweep / "0" / "history.csv")


def test_metric_columns_are_val_then_test(sweep: Path) -> None:
    runs = collect_runs(sweep)
    assert metric_columns(runs, headline_only=True) == [
        "val/acc",
        "val/balanced_acc",
        "val/precision",
        "val/recall",
        "val/f1",
        "val/auroc",
        "val/loss",
        "test/acc",
        "test/auroc",
        "test/loss",
    ]
    assert "val/auroc/glioma" in metric_columns(runs)


def test_failed_run_keeps_its_error(sweep: Path) -> None:
    runs = collect_runs(sweep)
    failed = runs[runs["status"] != "ok"]
    assert failed["run"].tolist() == ["13"]
    assert failed["error"].tolist() == ["ValueError: loss is nan at epoch 3"]
    assert failed["config_key"].tolist() == ["loss=bce"]
    assert failed["fold"].tolist() == [3]


def test_searches_any_tree_and_skips_report_folders(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    make_run(tmp_path / "study" / "a" / "deep" / "run1", {"model": "r18"}, 0, {"acc": 0.5})
    make_run(tmp_path / "study" / "b", {"model": "r50"}, 0, {"acc": 0.6})
    make_run(tmp_path / "study" / "report" / "copy", {"model": "x"}, 0, {"acc": 0.1})
    make_run(tmp_path / "study" / "b" / "report" / "old", {"model": "y"}, 0, {"acc": 0.2})
    runs = collect_runs(tmp_path / "study")
    assert runs["run"].tolist() == ["a/deep/run1", "b"]
    assert runs["config_key"].tolist() == ["model=r18", "model=r50"]


def test_single_run_folder(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    make_run(tmp_path / "run", {}, None, {"acc": 0.7}, n_folds=None)
    runs = collect_runs(tmp_path / "run")
    assert runs["run"].tolist() == ["."]
    assert runs["config_key"].tolist() == [""]


def test_config_key_derived_from_overrides_when_absent(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    path = make_run(tmp_path / "0", {"optimizer": "adam", "loss": "focal"}, 2, {"acc": 0.5})
    data = json.loads(path.read_text())
    del data["config_key"]
    data["overrides"]["seed"] = 7
    path.write_text(json.dumps(data))
    runs = collect_runs(tmp_path)
    assert runs.loc[0, "config_key"] == "loss=focal,optimizer=adam"
    assert runs.loc[0, "fold"] == 2


def test_labels_show_only_the_overrides_that_differ() -> None:
    keys = [
        "data.image_size=16,fold=kfold,loss=ce,model=small_cnn",
        "data.image_size=16,fold=kfold,loss=focal,model=small_cnn",
        "data.image_size=32,fold=kfold,loss=focal,model=small_cnn",
    ]
    assert config_labels(keys) == {
        keys[0]: "data.image_size=16,loss=ce",
        keys[1]: "data.image_size=16,loss=focal",
        keys[2]: "data.image_size=32,loss=focal",
    }
    assert common_overrides(keys) == "fold=kfold,model=small_cnn"
    assert config_labels(["", "loss=focal"]) == {"": "(default)", "loss=focal": "loss=focal"}
    assert config_labels(["model=a,loss=ce"]) == {"model=a,loss=ce": "model=a,loss=ce"}


def test_unreadable_metrics_json_is_listed_as_failed(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    make_run(tmp_path / "0", {"loss": "ce"}, 0, {"acc": 0.5})
    broken = make_run(tmp_path / "1", {"loss": "ce"}, 1, {"acc": 0.5})
    broken.write_text('{"status": "ok", "val": {')
    runs = collect_runs(tmp_path)
    row = runs.iloc[1]
    assert row["status"] == "failed"
    assert "unreadable metrics.json" in row["error"]
    assert row["config_key"] == "loss=ce"  # from .hydra/overrides.yaml
    assert row["fold"] == 1


def test_unfinished_hydra_job_beside_finished_ones_is_failed(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    make_run(tmp_path / "0", {"loss": "ce"}, 0, {"acc": 0.5})
    killed = tmp_path / "1" / ".hydra"
    killed.mkdir(parents=True)
    (killed / "overrides.yaml").write_text("- loss=ce\n- fold.index=1\n- hydra.launcher.n_jobs=2\n")
    runs = collect_runs(tmp_path)
    assert runs["run"].tolist() == ["0", "1"]
    row = runs.iloc[1]
    assert row["status"] == "failed"
    assert "did not finish" in row["error"]
    assert (row["config_key"], row["fold"]) == ("loss=ce", 1)


def test_missing_folder_and_empty_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="folder not found"):
        collect_runs(tmp_path / "nope")
    (tmp_path / "empty" / "0").mkdir(parents=True)
    with pytest.raises(ReportError, match=r"no metrics\.json found under .*empty"):
        collect_runs(tmp_path / "empty")


def test_resolve_baseline() -> None:
    keys = ["loss=ce,optimizer=adam", "loss=focal,optimizer=adam", "loss=ce,optimizer=sgd"]
    assert resolve_baseline(keys, None) == keys[0]
    assert resolve_baseline(["loss=ce", "", "loss=focal"], None) == ""
    assert resolve_baseline(keys, "loss=focal,optimizer=adam") == keys[1]
    assert resolve_baseline(keys, "loss=focal") == keys[1]
    assert resolve_baseline(keys, "optimizer=sgd") == keys[2]
    with pytest.raises(ReportError, match="matches 2 configurations"):
        resolve_baseline(keys, "loss=ce")
    with pytest.raises(ReportError, match=r"unknown baseline 'loss=dice'.*loss=ce,optimizer=sgd"):
        resolve_baseline(keys, "loss=dice")


def test_config_keys_with_commas_inside_values() -> None:
    key = "model.layers=[1,2],loss=ce"
    assert split_config_key(key) == {"model.layers": "[1,2]", "loss": "ce"}
    assert resolve_baseline([key, "model.layers=[3],loss=ce"], "model.layers=[1,2]") == key


def test_safe_names_are_unique_and_file_safe() -> None:
    names = safe_names(["", "loss=focal,optimizer=adam", "a=x/y", "a=x_y"])
    assert names[""] == "default"
    assert names["loss=focal,optimizer=adam"] == "loss-focal__optimizer-adam"
    assert "/" not in names["a=x/y"]
    assert len(set(names.values())) == 4
