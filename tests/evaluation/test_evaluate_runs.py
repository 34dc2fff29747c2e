"""``evaluate`` on real trained runs: every artifact, for each task and for a k-fold multirun."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, run_cli
from sklearn import metrics as skm

from medsweep.evaluation import EvalSettings, evaluate_path, evaluate_run, load_run
from medsweep.evaluation.cam import cam_maps, find_target_layer
from medsweep.evaluation.inference import load_run_model, predict
from medsweep.evaluation.tta import tta_views
from medsweep.results import read_metrics


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_every_artifact_is_written(evaluated, task):
    ev = evaluated[task]
    out = ev.out_dir
    assert out == ev.data.run_dirs[0] / "eval"
    for name in (
        "index.html",
        "index.md",
        "errors.html",
        "errors.md",
        "thresholds.json",
        "curves.json",
        "calibration.json",
        "summary.json",
        "tables/metrics_ci.csv",
        "tables/classification_report.csv",
        "tables/curves.csv",
        "tables/calibration.csv",
        "tables/thresholds.csv",
        "tables/tta.csv",
        "tables/examples.csv",
        "tables/cam_maps.npy",
        "figures/roc_pr.png",
        "figures/reliability.png",
    ):
        assert (out / name).is_file(), name
    assert list((out / "figures" / "examples").glob("*.png"))
    assert not ev.notes, ev.notes


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_metrics_equal_training_metrics_and_scikit_learn(evaluated, trained, task):
    """Predictions-file metrics equal the torchmetrics values the run logged and scikit-learn's."""
    ev = evaluated[task]
    logged = read_metrics(trained[task])["test"]
    table = pd.read_csv(ev.out_dir / "tables" / "metrics_ci.csv").set_index("metric")
    for name in ("acc", "auroc", "f1"):
        assert table.loc[name, "estimate"] == pytest.approx(logged[name], abs=2e-6), name
        assert (
            table.loc[name, "ci_low"] <= table.loc[name, "estimate"] <= table.loc[name, "ci_high"]
        )
    data = load_run(trained[task])
    y, p = data.test.targets, data.test.probs
    if task == "binary":
        assert table.loc["auroc", "estimate"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    elif task == "multiclass":
        assert table.loc["auroc", "estimate"] == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", labels=range(10))
        )
        counts = pd.read_csv(ev.out_dir / "tables" / "confusion_all.csv", index_col=0).to_numpy()
        assert (counts == skm.confusion_matrix(y, p.argmax(1), labels=range(10))).all()
    else:
        assert table.loc["auroc", "estimate"] == pytest.approx(skm.roc_auc_score(y, p))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_thresholds_stored_and_target_recall_reached_on_validation(trained, task, tmp_path):
    settings = EvalSettings(
        threshold_method="target_recall",
        target_recall=0.9,
        n_boot=50,
        tta=False,
        cam=False,
        thumbnails=False,
        wandb=False,
    )
    ev = evaluate_run(trained[task], settings, out_dir=tmp_path / "eval")
    stored = json.loads((tmp_path / "eval" / "thresholds.json").read_text())
    assert stored["method"] == "target_recall" and stored["chosen_on"] == "val"
    data = load_run(trained[task])
    truth = data.val.targets if task == "multilabel" else np.eye(2)[data.val.targets].astype(int)
    for label, t in stored["thresholds"].items():
        j = data.classes.index(label)
        hit = (data.val.probs[:, j] >= t) & (truth[:, j] == 1)
        assert hit.sum() / truth[:, j].sum() >= 0.9
    after = ev.threshold_table[ev.threshold_table["decision"] == "after"]
    assert after["threshold"].tolist() == pytest.approx(list(stored["thresholds"].values()))


def test_temperature_on_a_real_run(evaluated):
    ev = evaluated["multiclass"]
    cal = ev.calibration.set_index(["part", "probabilities"])
    assert cal.loc[("val", "after temperature"), "nll"] <= cal.loc[("val", "before"), "nll"] + 1e-12


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_tta_identity_equals_saved_predictions(trained, evaluated, task):
    """Re-inference through the identity view reproduces the run's saved test probabilities."""
    rm = load_run_model(trained[task])
    data = load_run(trained[task])
    probs, per_view = predict(rm.model, rm.dataset(data.test.index), task, tta_views(flips=()))
    assert list(per_view) == ["identity"]
    assert np.abs(probs - data.test.probs).max() < 1e-5
    assert evaluated[task].tta.attrs["max_identity_diff"] < 1e-5
    flipped, _ = predict(rm.model, rm.dataset(data.test.index[:8]), task, tta_views(["horizontal"]))
    assert not np.allclose(flipped, data.test.probs[:8])


def test_gradcam_maps_size_range_and_class_dependence(trained):
    rm = load_run_model(trained["multiclass"])
    data = load_run(trained["multiclass"])
    dataset = rm.dataset(data.test.index[:6])
    images = torch.stack([dataset[i][0] for i in range(6)])
    assert find_target_layer(rm.model)[0] == "backbone.stages.2"
    a = cam_maps(rm.model, images, [0] * 6, "multiclass")
    b = cam_maps(rm.model, images, [1] * 6, "multiclass")
    assert a.shape == b.shape == (6, *images.shape[-2:])
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0
    assert np.abs(a - b).max() > 0.05
    for method in ("gradcam++", "eigencam"):
        maps = cam_maps(rm.model, images[:2], [0, 1], "multiclass", method=method)
        assert maps.shape == (2, *images.shape[-2:]) and 0 <= maps.min() <= maps.max() <= 1
    override = cam_maps(rm.model, images[:2], [0, 1], "multiclass", layer="backbone.stages.1")
    assert override.shape == (2, *images.shape[-2:])


def test_multirun_ensemble_and_report_paired_tests(multirun):
    from medsweep.evaluation.comparisons import mcnemar_test
    from medsweep.evaluation.delong import delong_test
    from medsweep.evaluation.ensemble import fold_ensemble
    from medsweep.report import build_report

    settings = EvalSettings(n_boot=100, tta=False, cam=False, thumbnails=False, wandb=False)
    done = evaluate_path(multirun, settings)
    assert [ev.kind for ev in done].count("run") == 4
    ensembles = [ev for ev in done if ev.kind == "ensemble"]
    assert len(ensembles) == 2
    assert (multirun / "eval" / "index.html").is_file()
    # the index names each configuration by what differs; the shared overrides once, above
    index = (multirun / "eval" / "index.md").read_text()
    rows = [line for line in index.splitlines() if "| ensemble |" in line]
    assert sorted(row.split("|")[1].strip() for row in rows) == [
        "optimizer.lr=0.001",
        "optimizer.lr=0.01",
    ]
    assert "Common to all configurations:" in index and "fold=kfold" in index
    ens = ensembles[0]
    members = [load_run(d) for d in ens.data.run_dirs]
    assert len({tuple(sorted(m.test.index)) for m in members}) == 1  # one shared test set
    manual, _ = fold_ensemble(members)
    order = np.argsort(manual.test.index)
    mean = np.mean([m.test.probs[np.argsort(m.test.index)] for m in members], axis=0)
    assert np.allclose(manual.test.probs[order], mean)
    table = ens.ensemble.set_index("metric")
    y = manual.test.targets[order]
    assert table.loc["auroc", "ensemble"] == pytest.approx(skm.roc_auc_score(y, mean[:, 1]))
    singles = [skm.roc_auc_score(y, m.test.probs[np.argsort(m.test.index)][:, 1]) for m in members]
    assert table.loc["auroc", "mean_of_folds"] == pytest.approx(np.mean(singles))
    assert (
        table.loc["auroc", "gain_ci_low"]
        <= table.loc["auroc", "gain"]
        <= table.loc["auroc", "gain_ci_high"]
    )
    assert (ens.out_dir / "tables" / "ensemble_vs_folds.csv").is_file()

    report = build_report(multirun, baseline="optimizer.lr=0.001", wandb=False, figures=False)
    paired = report.paired
    assert set(paired["scope"]) == {"fold ensemble (2 vs 2)", "fold 0", "fold 1"}
    row = paired[paired["scope"] == "fold 0"].iloc[0]
    runs = {lr: load_run(multirun / f"lr{lr}_fold0") for lr in ("0.01", "0.001")}
    a, b = runs["0.01"].test, runs["0.001"].test
    ia, ib = np.argsort(a.index), np.argsort(b.index)
    expected = delong_test(a.targets[ia], a.probs[ia, 1], b.probs[ib, 1])
    assert row["auroc_p"] == pytest.approx(expected.p_value)
    assert row["auroc_test"] == "DeLong"
    right_a = (a.probs[ia, 1] >= 0.5) == a.targets[ia]
    right_b = (b.probs[ib, 1] >= 0.5) == b.targets[ib]
    assert row["acc_p"] == pytest.approx(mcnemar_test(right_a, right_b).p_value)
    html = (report.out_dir / "report.html").read_text()
    assert "Paired test-set comparisons" in html and "DeLong" in html
    assert "ensemble_" in html  # links to each configuration's evaluation
    assert (report.out_dir / "paired.csv").is_file()


def test_evaluate_commands(trained, tmp_path):
    """``python evaluate.py run=...`` and ``medsweep evaluate`` run as a user runs them."""
    target = trained["binary"]
    out = run_cli(
        [
            "evaluate.py",
            f"run={target}",
            "eval.bootstrap.n=50",
            "eval.tta.enabled=false",
            "eval.cam.enabled=false",
            "eval.threshold.method=youden",
            "eval.wandb=false",
        ],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    stored = json.loads((target / "eval" / "thresholds.json").read_text())
    assert stored["method"] == "youden"
    out = run_cli(
        [
            "-m",
            "medsweep.cli",
            "evaluate",
            str(target),
            "eval.bootstrap.n=50",
            "eval.tta.enabled=false",
            "eval.cam.method=gradcam++",
            "eval.threshold.method=max_f1",
            "eval.wandb=false",
        ],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((target / "eval" / "thresholds.json").read_text())["method"] == "max_f1"
    assert ROOT.is_dir()
