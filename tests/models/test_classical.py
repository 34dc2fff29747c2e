"""Classical scikit-learn baselines through the real pipeline, checked against scikit-learn's metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FAST, compose, run
from sklearn import metrics as skm

from medsweep.metrics import build_metrics
from medsweep.models.classical import ESTIMATORS, ClassicalClassifier, extract_features
from medsweep.pipeline import build_datamodule, build_model, fit_classical

# 16 px digits; one thread so that runs sharing a small machine do not fight over OpenMP
BASE = ["data.image_size=16", "model=classical", "model.n_threads=1"]


def fit_parts(overrides: list[str], tmp_path):
    """The pipeline's own parts, fitted directly: the datamodule, the model and its result."""
    cfg = compose([*BASE, *overrides], tmp_path / "parts")
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    extra, parts = fit_classical(model, dm)
    result = {**extra, **{part: out["metrics"] for part, out in parts.items()}}
    result["confusion"] = {part: out["confusion"] for part, out in parts.items()}
    model.outputs_ = {p: {"probs": o["probs"], "targets": o["targets"]} for p, o in parts.items()}
    return dm, model, result


def metric_names(task: str, classes: list[str]) -> set[str]:
    """The scalar names the deep models write for ``task`` (ClassificationModule's), plus the loss."""
    names = set(build_metrics(task, len(classes)).keys()) - {"confusion", "auroc_per_class"}
    if task != "binary":
        names |= {f"auroc/{c}" for c in classes}
    return names | {"loss"}


def check_against_sklearn(result: dict, outputs: dict, task: str, classes: list[str]) -> None:
    """Every part's metrics equal scikit-learn's on the same probabilities."""
    assert set(outputs) == {"val", "test"}
    for part, out in outputs.items():
        probs, y, got = out["probs"], out["targets"], result[part]
        assert set(got) == metric_names(task, classes)
        if task == "multiclass":
            assert probs.shape == (len(y), len(classes))
            pred = probs.argmax(axis=1)
            assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
            assert got["balanced_acc"] == pytest.approx(
                skm.balanced_accuracy_score(y, pred), abs=1e-6
            )
            assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
            assert got["auroc"] == pytest.approx(
                skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-6
            )
            assert got["loss"] == pytest.approx(skm.log_loss(y, probs), abs=1e-6)
            assert result["confusion"][part] == skm.confusion_matrix(y, pred).tolist()
        elif task == "binary":
            assert probs.shape == (len(y),)
            pred = (probs > 0.5).astype(int)  # torchmetrics' rule
            assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
            assert got["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-6)
            assert got["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-6)
            assert got["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-6)
            assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, probs), abs=1e-6)
            assert got["loss"] == pytest.approx(skm.log_loss(y, probs), abs=1e-6)
            assert result["confusion"][part] == skm.confusion_matrix(y, pred).tolist()
        else:
            assert probs.shape == y.shape == (len(y), len(classes))
            pred = (probs > 0.5).astype(int)
            assert got["exact_match"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
            assert got["acc"] == pytest.approx(1 - skm.hamming_loss(y, pred), abs=1e-6)
            assert got["hamming_acc"] == pytest.approx(1 - skm.hamming_loss(y, pred), abs=1e-6)
            assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
            assert got["auroc"] == pytest.approx(
                skm.roc_auc_score(y, probs, average="macro"), abs=1e-6
            )
            for j, name in enumerate(classes):
                assert got[f"auroc/{name}"] == pytest.approx(
                    skm.roc_auc_score(y[:, j], probs[:, j]), abs=1e-6
                )


def check_record(tmp_path, result: dict) -> dict:
    """metrics.json is written with status ok and holds exactly the parts' result."""
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok"
    assert saved["best_epoch"] == 0 and saved["epochs_run"] == 1
    assert set(saved["timing"]) == {"fit_s", "s_per_epoch", "train_img_per_s"}
    assert saved["timing"]["fit_s"] > 0 and saved["timing"]["train_img_per_s"] > 0
    for part in ("val", "test"):
        assert saved[part] == pytest.approx(result[part], abs=1e-12)  # deterministic refit
        assert saved["confusion"][part] == result["confusion"][part]
    return saved


# fewer boosting rounds: hist_gb grows one tree per class and round, the slowest of the four here
LIGHT = {"hist_gb": ["+model.params.max_iter=20"]}


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_each_estimator_runs_and_matches_sklearn_metrics(estimator, tmp_path):
    overrides = [f"model.estimator={estimator}", *LIGHT.get(estimator, [])]
    dm, model, result = fit_parts(overrides, tmp_path)
    check_against_sklearn(result, model.outputs_, "multiclass", dm.classes)
    run([*BASE, *overrides], tmp_path)
    saved = check_record(tmp_path, result)
    assert saved["classical"]["estimator"] == estimator
    assert saved["classical"]["n_features"] == 16 * 16
    assert saved["classical"]["n_train"] == saved["sizes"]["train"]
    assert saved["val"]["acc"] > 0.85  # digits are easy for every one of them


@pytest.mark.parametrize(
    ("data", "task", "estimator"),
    [
        ("digits_binary", "binary", "svc"),
        ("digits_multilabel", "multilabel", "logreg"),
        ("digits_multilabel", "multilabel", "hist_gb"),
    ],
)
def test_binary_and_multilabel_tasks(data, task, estimator, tmp_path):
    overrides = [f"data={data}", f"model.estimator={estimator}", *LIGHT.get(estimator, [])]
    dm, model, result = fit_parts(overrides, tmp_path)
    assert dm.task == task
    check_against_sklearn(result, model.outputs_, task, dm.classes)
    run([*BASE, *overrides], tmp_path)
    saved = check_record(tmp_path, result)
    assert saved["task"] == task and saved["val"]["auroc"] > 0.9


def test_backbone_features_from_a_frozen_timm_model(tmp_path):
    overrides = [
        "model.features=backbone",
        "model.backbone=resnet18",
        "model.pretrained=false",
        "model.weights=null",
        "model.max_train_samples=300",
        "data.image_size=32",
    ]
    record = run([*BASE, *overrides], tmp_path)
    assert record["status"] == "ok"
    assert record["classical"] == {
        "estimator": "logreg",
        "features": "backbone",
        "backbone": "resnet18",
        "n_train": 300,
        "n_features": 512,
    }
    assert set(record["val"]) == metric_names("multiclass", record["classes"])
    assert set(record["test"]) == metric_names("multiclass", record["classes"])


def test_packaged_imagenet_backbone_works_offline(tmp_path):
    record = run(
        [
            *BASE,
            "model.features=backbone",
            "model.max_train_samples=300",
            "data=digits_binary",
            "data.image_size=32",
        ],
        tmp_path,
    )
    assert record["classical"]["backbone"] == "efficientnet_lite0"
    assert record["classical"]["n_features"] == 1280
    assert record["val"]["auroc"] > 0.6


def test_max_train_samples_takes_a_stratified_subset(tmp_path):
    dm, model, result = fit_parts(["model.max_train_samples=100"], tmp_path)
    assert result["classical"]["n_train"] == 100
    train_labels = dm.source.labels[model.train_indices_]
    assert set(train_labels) == set(range(10))
    assert set(model.train_indices_) <= set(dm.splits.train)


def test_params_reach_the_estimator(tmp_path):
    _, model, _ = fit_parts(
        [
            "model.estimator=random_forest",
            "+model.params.n_estimators=7",
            "+model.params.max_depth=3",
        ],
        tmp_path,
    )
    forest = model.fitted_
    assert len(forest.estimators_) == 7 and forest.max_depth == 3 and forest.random_state == 42


def test_works_with_the_generic_fast_overrides(tmp_path):
    record = run([*FAST, "model=classical"], tmp_path)
    assert record["status"] == "ok" and record["classical"]["estimator"] == "logreg"


def test_unknown_estimator_names_the_key_and_choices(tmp_path):
    choices = r"model\.estimator='xgb' is not valid; choose one of \['logreg', 'svc', 'random_forest', 'hist_gb'\]"
    with pytest.raises(ValueError, match=choices):
        ClassicalClassifier(estimator="xgb")
    with pytest.raises(ValueError, match=choices):
        run([*BASE, "model.estimator=xgb"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and "model.estimator='xgb'" in saved["error"]
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_features_and_params_are_refused_at_setup(tmp_path):
    with pytest.raises(ValueError, match=r"model\.features='hog'.*pixels.*backbone"):
        ClassicalClassifier(features="hog")
    with pytest.raises(ValueError, match=r"model\.params \['n_trees'\].*RandomForestClassifier"):
        ClassicalClassifier(estimator="random_forest", params={"n_trees": 5})
    with pytest.raises(ValueError, match=r"model\.params\.probability"):
        ClassicalClassifier(estimator="svc", params={"probability": True})
    with pytest.raises(ValueError, match=r"model\.backbone='resnet_18'.*resnet18"):
        ClassicalClassifier(features="backbone", backbone="resnet_18", pretrained=False)
    with pytest.raises(
        ValueError, match=r"model\.weights=packaged.*efficientnet_lite0.*'resnet18'"
    ):
        ClassicalClassifier(features="backbone", backbone="resnet18", weights="packaged")
    with pytest.raises(FileNotFoundError, match="model.weights"):
        ClassicalClassifier(
            features="backbone", backbone="resnet18", weights=str(tmp_path / "no.pth")
        )
    with pytest.raises(ValueError, match=r"model\.max_train_samples=0"):
        ClassicalClassifier(max_train_samples=0)


def test_accuracy_from_probabilities_matches_predict(tmp_path):
    """The probabilities' argmax is the estimator's own prediction (no column mix-up)."""
    dm, model, _ = fit_parts(["model.estimator=logreg"], tmp_path)
    x, _ = extract_features(dm.datasets["val"], dm.batch_size)
    np.testing.assert_array_equal(
        model.outputs_["val"]["probs"].argmax(1), model.fitted_.predict(x)
    )
