"""AUROC of all bootstrap resamples at once against scikit-learn scored one resample at a time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medsweep.evaluation import bootstrap
from medsweep.evaluation.bootstrap import (
    bootstrap_auroc,
    bootstrap_metric,
    metrics_with_ci,
    resample_indices,
    resampled_auroc,
    strata_of,
)
from medsweep.evaluation.comparisons import compare_on_test
from medsweep.evaluation.metrics import metric_functions

TOL = 1e-12


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def binary_case(seed: int = 0):
    """60 negatives, 25 positives, scores rounded to 0.05 (many ties across the classes)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(60, int), np.ones(25, int)]
    rng.shuffle(y)
    s = np.round(np.clip(0.3 * y + rng.random(len(y)) * 0.7, 0, 1) / 0.05) * 0.05
    return y, np.stack([1 - s, s], axis=1)


def multiclass_case(seed: int = 0, k: int = 10):
    """k classes from 40 samples down to 3, float32 probabilities rounded to 2 decimals."""
    rng = np.random.default_rng(seed)
    counts = np.linspace(40, 3, k).astype(int)
    y = np.repeat(np.arange(k), counts)
    rng.shuffle(y)
    z = rng.normal(0, 1, (len(y), k))
    z[np.arange(len(y)), y] += 1.2
    p = np.round(softmax(z), 2)
    p[:, -1] = 1 - p[:, :-1].sum(axis=1)  # rows still sum to 1 within np.allclose
    return y, p.astype(np.float32)


def multilabel_case(seed: int = 0):
    """Five labels; the last has one positive, which shares the pooled stratum of rare label
    patterns with many negatives, so a share of the resamples draw no positive of it."""
    rng = np.random.default_rng(seed)
    n = 160
    y = (rng.random((n, 5)) < [0.5, 0.35, 0.2, 0.1, 0.0]).astype(int)
    y[rng.integers(n), 4] = 1
    p = np.round(np.clip(0.25 * y + 0.75 * rng.random((n, 5)), 0, 1), 2)
    return y, p


def per_resample(targets, probs, task, resamples) -> np.ndarray:
    """The current per-resample path: the task's AUROC metric on each resample in turn."""
    auroc = metric_functions(task)["auroc"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([auroc(targets[r], probs[r]) for r in resamples])


def assert_same(fast: np.ndarray, reference: np.ndarray) -> None:
    assert fast.shape == reference.shape
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(reference))
    finite = np.isfinite(reference)
    assert np.abs(fast[finite] - reference[finite]).max() <= TOL


CASES = {"binary": binary_case, "multiclass": multiclass_case, "multilabel": multilabel_case}


@pytest.mark.parametrize("task", list(CASES))
def test_resampled_auroc_equals_sklearn_per_resample(task):
    targets, probs = CASES[task]()
    resamples = resample_indices(strata_of(targets, task), 200, seed=1)
    reference = per_resample(targets, probs, task, resamples)
    fast = resampled_auroc(targets, probs, task, resamples)
    assert_same(fast, reference)
    assert np.isfinite(reference).sum() >= 100
    if task == "multilabel":
        # resamples without the rare label's positive: NaN on both paths
        assert np.isnan(reference).sum() >= 20


def test_resampled_auroc_refuses_the_samples_sklearn_refuses():
    """A multiclass row not summing to 1 or a non-finite score makes scikit-learn refuse (NaN)
    every resample that draws it; a class with no samples leaves every resample NaN."""
    y, p = multiclass_case(seed=2, k=5)
    p = p.astype(np.float64)
    p[3] *= 1.1
    p[7, 0] = np.nan
    resamples = resample_indices(strata_of(y, "multiclass"), 200, seed=3)
    reference = per_resample(y, p, "multiclass", resamples)
    assert 0 < np.isnan(reference).sum() < len(reference)
    assert_same(resampled_auroc(y, p, "multiclass", resamples), reference)

    y_ml, p_ml = multilabel_case(seed=4)
    p_ml[10, 1] = np.inf
    resamples = resample_indices(strata_of(y_ml, "multilabel"), 200, seed=5)
    assert_same(
        resampled_auroc(y_ml, p_ml, "multilabel", resamples),
        per_resample(y_ml, p_ml, "multilabel", resamples),
    )

    absent = np.where(y == 4, 3, y)  # class 4 has no samples
    resamples = resample_indices(strata_of(absent, "multiclass"), 20, seed=6)
    assert np.isnan(resampled_auroc(absent, p, "multiclass", resamples)).all()
    assert np.isnan(per_resample(absent, p, "multiclass", resamples)).all()


def test_resampled_auroc_is_the_same_in_small_chunks(monkeypatch):
    y, p = multiclass_case(seed=7)
    resamples = resample_indices(strata_of(y, "multiclass"), 50, seed=8)
    whole = resampled_auroc(y, p, "multiclass", resamples)
    monkeypatch.setattr(bootstrap, "AUROC_CHUNK_ELEMENTS", 7 * len(y))  # chunks of 7 resamples
    np.testing.assert_array_equal(resampled_auroc(y, p, "multiclass", resamples), whole)


def test_resampled_auroc_declines_labels_outside_the_task():
    y, p = multiclass_case(seed=9, k=4)
    y = y.copy()
    y[0] = 7  # scikit-learn refuses a label outside 0..K-1; scored per resample instead
    assert resampled_auroc(y, p, "multiclass", np.arange(len(y))[None, :]) is None


@pytest.mark.parametrize("task", list(CASES))
def test_bootstrap_auroc_interval_equals_per_resample_interval(task):
    targets, probs = CASES[task](seed=10)
    fn = metric_functions(task)["auroc"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = bootstrap_metric(fn, targets, probs, task, n_boot=150, seed=11)
    fast = bootstrap_auroc(fn, targets, probs, task, n_boot=150, seed=11)
    assert fast.estimate == slow.estimate
    assert fast.n_valid == slow.n_valid
    assert fast.low == pytest.approx(slow.low, abs=TOL)
    assert fast.high == pytest.approx(slow.high, abs=TOL)


def test_bootstrap_auroc_uses_the_given_metric_when_it_is_another_auroc():
    y, p = multiclass_case(seed=12, k=4)

    def weighted(t, q):
        return skm.roc_auc_score(t, q, multi_class="ovr", average="weighted", labels=range(4))

    assert bootstrap_auroc(weighted, y, p, "multiclass", 30) == bootstrap_metric(
        weighted, y, p, "multiclass", 30
    )
    table = metrics_with_ci(y, p, "multiclass", {"auroc": weighted}, n_boot=30)
    assert table.loc[0, "ci_low"] == bootstrap_metric(weighted, y, p, "multiclass", 30).low


def test_compare_on_test_multiclass_equals_sklearn_bootstrap():
    y, p = multiclass_case(seed=13)
    rng = np.random.default_rng(14)
    q = softmax(np.log(np.clip(p.astype(np.float64), 1e-3, None)) + rng.normal(0, 0.2, p.shape))
    n_boot, seed, confidence = 300, 15, 0.95
    out = compare_on_test(y, p, q, "multiclass", n_boot=n_boot, confidence=confidence, seed=seed)

    def auroc(t, s):
        return skm.roc_auc_score(t, s, multi_class="ovr", average="macro", labels=range(10))

    diffs = np.array(
        [
            auroc(y[r], p[r]) - auroc(y[r], q[r])
            for r in resample_indices(strata_of(y, "multiclass"), n_boot, seed)
        ]
    )
    # no difference within rounding of 0, so the sign counts of the p-value are unambiguous
    assert np.abs(diffs).min() > 1e-9
    low, high = np.quantile(diffs, [0.025, 0.975])
    far = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    p_value = min(1.0, 2 * (far + 1) / (len(diffs) + 1))
    assert 0 < p_value < 1
    assert out["auroc_diff"] == auroc(y, p) - auroc(y, q)
    assert out["auroc_ci_low"] == pytest.approx(low, abs=TOL)
    assert out["auroc_ci_high"] == pytest.approx(high, abs=TOL)
    assert out["auroc_p"] == p_value


def test_bootstrap_p_never_claims_more_than_its_resamples_show():
    from medsweep.evaluation.comparisons import bootstrap_p_value

    # all 1,000 resampled differences favour one side: p = 2 / 1001, not 0
    assert bootstrap_p_value(np.full(1000, 0.03)) == pytest.approx(2 / 1001)
    # 25 of 1,000 on the far side of 0 (ties with 0 count as far): 2 * 26 / 1001
    diffs = np.concatenate([np.full(975, 0.01), np.full(20, -0.01), np.zeros(5)])
    assert bootstrap_p_value(diffs) == pytest.approx(2 * 26 / 1001)
    # centred differences: p is capped at 1
    assert bootstrap_p_value(np.array([-0.1, 0.0, 0.1])) == 1.0
