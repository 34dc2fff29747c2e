"""Bootstrap, DeLong, McNemar, thresholds, calibration and ensembles against independent numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from medsweep.evaluation.bootstrap import bootstrap_metric, metrics_with_ci, resample_indices
from medsweep.evaluation.calibration import (
    apply_temperature,
    calibration_errors,
    fit_temperature,
    reliability_bins,
)
from medsweep.evaluation.comparisons import compare_on_test, mcnemar_table, mcnemar_test
from medsweep.evaluation.data import Part
from medsweep.evaluation.delong import delong_covariance, delong_interval, delong_test
from medsweep.evaluation.ensemble import ensemble_gain, ensemble_part
from medsweep.evaluation.metrics import (
    classification_report,
    confusion_matrices,
    curves,
    metric_functions,
    point_metrics,
)
from medsweep.evaluation.thresholds import choose_threshold, choose_thresholds


def binary_sample(n: int, seed: int = 0, separation: float = 1.0):
    """Targets and 2-column probabilities of a noisy scorer."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(separation * (2 * y - 1) + rng.normal(0, 1.5, n))))
    return y, np.stack([1 - p, p], axis=1)


def multiclass_sample(n: int, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), y] += 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return y, p


# --- DeLong ---------------------------------------------------------------------------------


def test_delong_variance_equals_hand_computation():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.7, 0.4, 0.2, 0.8, 0.1])
    pos, neg = s[y == 1], s[y == 0]

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = np.array([np.mean([psi(x, z) for z in neg]) for x in pos])
    v01 = np.array([np.mean([psi(x, z) for x in pos]) for z in neg])
    auc = v10.mean()
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    aucs, cov = delong_covariance(y, s)
    assert aucs[0] == pytest.approx(auc) == pytest.approx(skm.roc_auc_score(y, s))
    assert auc == pytest.approx(9.5 / 12)  # counted by hand: 9 wins and one tie out of 12 pairs
    assert cov[0, 0] == pytest.approx(var)
    interval = delong_interval(y, s)
    half = stats.norm.ppf(0.975) * np.sqrt(var)
    assert interval.low == pytest.approx(max(0, auc - half))
    assert interval.high == pytest.approx(min(1, auc + half))


def test_delong_paired_test_covariance_and_p():
    y, p = binary_sample(200, seed=1)
    _, q = binary_sample(200, seed=2)
    a, b = p[:, 1], 0.5 * p[:, 1] + 0.5 * q[:, 1]
    test = delong_test(y, a, b)
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    # the covariance of two scores' AUROCs by hand from placement values
    pos, neg = y == 1, y == 0
    va = np.array([np.mean((x > a[neg]) + 0.5 * (x == a[neg])) for x in a[pos]])
    vb = np.array([np.mean((x > b[neg]) + 0.5 * (x == b[neg])) for x in b[pos]])
    wa = np.array([np.mean((a[pos] > z) + 0.5 * (a[pos] == z)) for z in a[neg]])
    wb = np.array([np.mean((b[pos] > z) + 0.5 * (b[pos] == z)) for z in b[neg]])
    cov_ab = np.cov(va, vb)[0, 1] / pos.sum() + np.cov(wa, wb)[0, 1] / neg.sum()
    assert cov[0, 1] == pytest.approx(cov_ab)
    var = cov[0, 0] + cov[1, 1] - 2 * cov_ab
    z = (skm.roc_auc_score(y, a) - skm.roc_auc_score(y, b)) / np.sqrt(var)
    assert test.z == pytest.approx(z)
    assert test.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    same = delong_test(y, a, a)
    assert same.diff == 0 and same.p_value == 1.0


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_is_stratified():
    strata = np.array([0] * 7 + [1] * 3)
    draws = resample_indices(strata, 50, seed=0)
    assert ((strata[draws] == 1).sum(axis=1) == 3).all()


@pytest.mark.parametrize("metric", ["auroc", "acc", "f1"])
def test_bootstrap_ci_contains_estimate_and_narrows(metric):
    fn = metric_functions("binary")[metric]
    widths = []
    for n in (100, 1600):
        y, p = binary_sample(n, seed=3)
        interval = bootstrap_metric(fn, y, p, "binary", n_boot=300, seed=0)
        assert interval.estimate == pytest.approx(fn(y, p))
        assert interval.low <= interval.estimate <= interval.high
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 16x the samples, about a quarter of the width


def test_metrics_table_has_delong_auroc_for_binary():
    y, p = binary_sample(300, seed=4)
    table = metrics_with_ci(y, p, "binary", metric_functions("binary"), n_boot=200).set_index(
        "metric"
    )
    row = table.loc["auroc"]
    assert row["estimate"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert row["delong_low"] < row["estimate"] < row["delong_high"]
    # two methods for one quantity: the intervals agree roughly
    assert abs((row["delong_high"] - row["delong_low"]) - (row["ci_high"] - row["ci_low"])) < 0.03


# --- metrics --------------------------------------------------------------------------------


def test_point_metrics_equal_scikit_learn_binary():
    y, p = binary_sample(250, seed=5)
    got = point_metrics(y, p, "binary")
    pred = (p[:, 1] >= 0.5).astype(int)
    tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
    tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())
    assert got["acc"] == pytest.approx((tp + tn) / len(y))
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    assert got["brier"] == pytest.approx(np.mean((p[:, 1] - y) ** 2))


def test_classification_report_and_confusion_equal_scikit_learn_multiclass():
    y, p = multiclass_sample(300)
    classes = ["a", "b", "c", "d"]
    report = classification_report(y, p, "multiclass", classes).set_index("class")
    reference = skm.classification_report(y, p.argmax(1), output_dict=True)
    for j, c in enumerate(classes):
        for column, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert report.loc[c, column] == pytest.approx(reference[str(j)][key])
        assert report.loc[c, "support"] == (y == j).sum()
        assert report.loc[c, "auroc"] == pytest.approx(skm.roc_auc_score(y == j, p[:, j]))
    matrices = confusion_matrices(y, p, "multiclass", classes)
    counts = np.zeros((4, 4), int)
    for t, q in zip(y, p.argmax(1)):
        counts[t, q] += 1
    assert (matrices["all"].to_numpy() == counts).all()
    assert np.allclose(matrices["all:normalised"].to_numpy(), counts / counts.sum(1, keepdims=True))
    got = point_metrics(y, p, "multiclass")
    assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert got["f1"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="macro"))


def test_curves_micro_macro():
    y, p = multiclass_sample(200, k=3, seed=6)
    data = curves(y, p, "multiclass", ["a", "b", "c"])
    onehot = np.eye(3)[y]
    assert data["roc"]["micro"]["auc"] == pytest.approx(
        skm.roc_auc_score(onehot, p, average="micro")
    )
    assert data["roc"]["macro"]["auc"] == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    )
    assert data["pr"]["b"]["ap"] == pytest.approx(skm.average_precision_score(y == 1, p[:, 1]))


# --- McNemar --------------------------------------------------------------------------------


@pytest.mark.parametrize("discordant", [(3, 9), (20, 40)])
def test_mcnemar_equals_statsmodels(discordant):
    from statsmodels.stats.contingency_tables import mcnemar

    b, c = discordant
    a, d = 50, 7
    right_a = np.array([1] * a + [1] * b + [0] * c + [0] * d, bool)
    right_b = np.array([1] * a + [0] * b + [1] * c + [0] * d, bool)
    assert mcnemar_table(right_a, right_b) == [[a, b], [c, d]]
    got = mcnemar_test(right_a, right_b)
    exact = b + c < 25
    reference = mcnemar(np.array([[a, b], [c, d]]), exact=exact, correction=True)
    assert got.p_value == pytest.approx(reference.pvalue)
    if exact:  # by hand: two-sided binomial on the discordant pairs
        assert got.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)
    else:  # by hand: (|b - c| - 1)^2 / (b + c), chi-square with one degree of freedom
        chi2 = (abs(b - c) - 1) ** 2 / (b + c)
        assert got.statistic == pytest.approx(chi2)
        assert got.p_value == pytest.approx(stats.chi2.sf(chi2, 1))


def test_compare_on_test_binary_and_multiclass():
    y, p = binary_sample(300, seed=7)
    _, q = binary_sample(300, seed=8)
    out = compare_on_test(y, p, q, "binary", n_boot=100)
    assert out["auroc_test"] == "DeLong"
    assert out["auroc_p"] == pytest.approx(delong_test(y, p[:, 1], q[:, 1]).p_value)
    ym, pm = multiclass_sample(300)
    out = compare_on_test(ym, pm, pm, "multiclass", n_boot=100)
    assert out["auroc_diff"] == 0 and out["acc_p"] == 1.0


# --- thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_target_recall_threshold_reaches_target_and_is_highest(target):
    y, p = binary_sample(300, seed=9)
    t = choose_threshold(y, p[:, 1], "target_recall", target)
    recall = ((p[:, 1] >= t) & (y == 1)).sum() / (y == 1).sum()
    assert recall >= target
    higher = np.unique(p[:, 1][p[:, 1] > t])
    if len(higher):  # the next higher candidate misses the target
        nxt = higher[0]
        assert ((p[:, 1] >= nxt) & (y == 1)).sum() / (y == 1).sum() < target


def test_max_f1_and_youden_equal_brute_force():
    y, p = binary_sample(200, seed=10)
    s = p[:, 1]
    candidates = np.unique(s)
    f1 = [skm.f1_score(y, s >= t) for t in candidates]
    j = [
        skm.recall_score(y, s >= t) + skm.recall_score(y, s >= t, pos_label=0) - 1
        for t in candidates
    ]
    t_f1 = choose_threshold(y, s, "max_f1")
    assert skm.f1_score(y, s >= t_f1) == pytest.approx(max(f1))
    t_j = choose_threshold(y, s, "youden")
    got_j = skm.recall_score(y, s >= t_j) + skm.recall_score(y, s >= t_j, pos_label=0) - 1
    assert got_j == pytest.approx(max(j))


def test_per_label_thresholds_multilabel():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, (200, 3))
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, (200, 3)), 0, 1)
    chosen = choose_thresholds(p, y, "multilabel", ["x", "y", "z"], "target_recall", 0.9)
    for j, label in enumerate("xyz"):
        assert ((p[:, j] >= chosen[label]) & (y[:, j] == 1)).sum() / y[:, j].sum() >= 0.9
    assert choose_thresholds(p, y.argmax(1), "multiclass", list("xyz")) == {}
    assert set(choose_thresholds(p, y.argmax(1), "multiclass", list("xyz"), per_class=True)) == set(
        "xyz"
    )


# --- calibration ----------------------------------------------------------------------------


def test_calibration_errors_by_hand():
    y = np.array([1, 0, 1, 1, 0, 0])
    p1 = np.array([0.95, 0.15, 0.55, 0.65, 0.45, 0.05])
    probs = np.stack([1 - p1, p1], 1)
    got = calibration_errors(probs, y, "binary", n_bins=2)
    # bins (0, .5]: p .15 .45 .05 -> mean .2167, freq 0; (.5, 1]: .95 .55 .65 -> mean .7167, freq 1
    low, high = np.mean([0.15, 0.45, 0.05]), np.mean([0.95, 0.55, 0.65])
    assert got["ece"] == pytest.approx(0.5 * abs(low - 0) + 0.5 * abs(high - 1))
    assert got["mce"] == pytest.approx(max(low, 1 - high))
    assert got["brier"] == pytest.approx(np.mean((p1 - y) ** 2))
    bins = reliability_bins(probs, y, "binary", n_bins=2)
    assert bins["count"].tolist() == [3, 3]
    assert bins["confidence"].tolist() == pytest.approx([low, high])


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_temperature_scaling_lowers_val_nll_and_keeps_argmax(task):
    rng = np.random.default_rng(12)
    if task == "binary":
        y, p = binary_sample(400, seed=12, separation=3.0)
        p = apply_temperature(p, task, 0.3)  # over-confident
    elif task == "multiclass":
        y, p = multiclass_sample(400)
        p = apply_temperature(p, task, 0.25)
    else:
        y = rng.integers(0, 2, (400, 3))
        p = apply_temperature(
            np.clip(0.3 * y + rng.uniform(0, 0.7, (400, 3)), 0.01, 0.99), task, 0.3
        )
    t = fit_temperature(p, y, task)
    scaled = apply_temperature(p, task, t)
    before = calibration_errors(p, y, task)["nll"]
    after = calibration_errors(scaled, y, task)["nll"]
    assert t > 1.2  # the over-confidence was found
    assert after < before
    assert (scaled.argmax(1) == p.argmax(1)).all()
    assert np.allclose(apply_temperature(p, task, 1.0), p, atol=1e-6)


def test_temperature_is_one_when_nothing_is_gained():
    y = np.array([0, 1, 0, 1])
    p = np.full((4, 2), 0.5)
    assert fit_temperature(p, y, "binary") == 1.0


# --- ensembles ------------------------------------------------------------------------------


def test_ensemble_of_identical_models_equals_single_model():
    y, p = multiclass_sample(120)
    index = np.arange(120) + 1000
    part = Part(p, y, index, [str(i) for i in index])
    shuffled = part.take(np.random.default_rng(0).permutation(120))
    mean, aligned = ensemble_part([part, shuffled, part])
    assert np.allclose(mean.probs, p) and (mean.index == index).all()
    fns = {k: v for k, v in metric_functions("multiclass").items() if k in ("acc", "auroc")}
    gain = ensemble_gain(y, mean.probs, [a.probs for a in aligned], "multiclass", fns, n_boot=50)
    assert np.allclose(gain["gain"], 0) and np.allclose(gain["gain_ci_high"], 0)
    assert gain.set_index("metric").loc["auroc", "ensemble"] == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr")
    )


def test_ensemble_refuses_different_test_sets():
    y, p = binary_sample(20)
    a = Part(p, y, np.arange(20), [str(i) for i in range(20)])
    b = Part(p, y, np.arange(1, 21), [str(i) for i in range(20)])
    with pytest.raises(ValueError, match="other samples"):
        ensemble_part([a, b])


def test_eval_settings_refuse_unknown_keys_and_methods():
    from medsweep.evaluation.settings import EvalSettings

    assert (
        EvalSettings.from_config({"threshold": {"method": "youden"}}).threshold_method == "youden"
    )
    with pytest.raises(
        ValueError, match=r"eval\.treshold is not a setting \(did you mean eval\.threshold\?\)"
    ):
        EvalSettings.from_config({"treshold": {"method": "youden"}})
    with pytest.raises(ValueError, match=r"eval\.cam\.layr is not a setting"):
        EvalSettings.from_config({"cam": {"layr": "x"}})
    with pytest.raises(ValueError, match=r"eval\.threshold\.method='f2'.*max_f1"):
        EvalSettings.from_config({"threshold": {"method": "f2"}})
