"""The bootstrap gain of a fold ensemble, AUROC scored on all resamples at once, against the same
statistic written out with scikit-learn one resample at a time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medsweep.evaluation import ensemble as ensemble_module
from medsweep.evaluation.bootstrap import resample_indices, strata_of
from medsweep.evaluation.ensemble import ensemble_gain
from medsweep.evaluation.metrics import metric_functions

TOL = 1e-12
NAN = float("nan")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def binary_case(members: int, seed: int = 0):
    """70 negatives, 20 positives; member scores rounded to 0.05 (many ties)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(70, int), np.ones(20, int)]
    rng.shuffle(y)
    probs = []
    for _ in range(members):
        s = np.round(np.clip(0.3 * y + 0.7 * rng.random(len(y)), 0, 1) / 0.05) * 0.05
        probs.append(np.stack([1 - s, s], axis=1))
    return y, probs


def multiclass_case(members: int, seed: int = 0, k: int = 10):
    """k classes from 30 samples down to 3; float32 probabilities rounded to 2 decimals."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), np.linspace(30, 3, k).astype(int))
    rng.shuffle(y)
    base = rng.normal(0, 1, (len(y), k))
    base[np.arange(len(y)), y] += 1.0
    probs = []
    for _ in range(members):
        p = np.round(softmax(base + rng.normal(0, 0.7, base.shape)), 2)
        p[:, -1] = 1 - p[:, :-1].sum(axis=1)  # rows sum to 1 within np.allclose
        probs.append(p.astype(np.float32))
    return y, probs


def multilabel_case(members: int, seed: int = 0):
    """Four labels; the last has a single positive, so some resamples draw none of it."""
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random((n, 4)) < [0.5, 0.3, 0.15, 0.0]).astype(int)
    y[rng.integers(n), 3] = 1
    probs = [
        np.round(np.clip(0.25 * y + 0.75 * rng.random(y.shape), 0, 1), 2) for _ in range(members)
    ]
    return y, probs


def sklearn_auroc(task: str):
    """The task's macro AUROC written with ``roc_auc_score``; NaN where it refuses."""

    def auroc(t: np.ndarray, p: np.ndarray) -> float:
        try:
            if task == "binary":
                return float(skm.roc_auc_score(t, p[:, 1]))
            if task == "multiclass":
                return float(
                    skm.roc_auc_score(
                        t, p, multi_class="ovr", average="macro", labels=range(p.shape[1])
                    )
                )
            return float(skm.roc_auc_score(t, p, average="macro"))
        except ValueError:
            return NAN

    return auroc


def reference_row(fn, targets, ensemble, members, task, n_boot, confidence, seed) -> dict:
    """One row of the table: every resample scored in turn with ``fn``."""
    singles = [fn(targets, p) for p in members]
    estimate = fn(targets, ensemble) - float(np.mean(singles))
    gains = []
    for rows in resample_indices(strata_of(targets, task), n_boot, seed):
        y = targets[rows]
        gains.append(fn(y, ensemble[rows]) - float(np.mean([fn(y, p[rows]) for p in members])))
    gains = np.array(gains)
    finite = gains[np.isfinite(gains)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (NAN, NAN)
    return {
        "ensemble": fn(targets, ensemble),
        "mean_of_folds": float(np.mean(singles)),
        "std_of_folds": float(np.std(singles, ddof=1)) if len(singles) > 1 else NAN,
        "gain": estimate,
        "gain_ci_low": float(low),
        "gain_ci_high": float(high),
        "n_finite": int(finite.size),
        "n_nan": int(gains.size - finite.size),
        **{f"fold_{i}": v for i, v in enumerate(singles)},
    }


def assert_row_equal(row, reference: dict) -> None:
    for key, want in reference.items():
        if key.startswith("n_"):
            continue
        got = float(row[key])
        if np.isnan(want):
            assert np.isnan(got), key
        else:
            assert got == pytest.approx(want, abs=TOL, rel=0), key


@pytest.fixture
def per_resample_calls(monkeypatch) -> list[int]:
    """How many metrics ``ensemble_gain`` bootstraps one resample at a time."""
    calls = []
    original = ensemble_module.bootstrap_statistic

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ensemble_module, "bootstrap_statistic", counted)
    return calls


def gain_and_reference(task, targets, members, functions, n_boot, confidence, seed):
    ensemble = np.mean(members, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = ensemble_gain(
            targets, ensemble, members, task, functions, n_boot, confidence, seed
        ).set_index("metric")
    return table, ensemble


CASES = {
    "binary": (binary_case, 4, 200),
    "multiclass": (multiclass_case, 4, 120),
    "multilabel": (multilabel_case, 3, 200),
}


@pytest.mark.parametrize("task", list(CASES))
def test_auroc_gain_equals_sklearn_per_resample(task, per_resample_calls):
    make, k, n_boot = CASES[task]
    targets, members = make(k, seed=1)
    functions = {name: metric_functions(task)[name] for name in ("acc", "auroc")}
    confidence, seed = 0.9, 2
    table, ensemble = gain_and_reference(
        task, targets, members, functions, n_boot, confidence, seed
    )
    assert list(table.index) == ["acc", "auroc"]
    assert len(per_resample_calls) == 1  # accuracy only: AUROC scored on all resamples at once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = reference_row(
            sklearn_auroc(task), targets, ensemble, members, task, n_boot, confidence, seed
        )
        want_acc = reference_row(
            functions["acc"], targets, ensemble, members, task, n_boot, confidence, seed
        )
    assert_row_equal(table.loc["auroc"], want)
    assert_row_equal(table.loc["acc"], want_acc)
    assert want["n_finite"] >= n_boot // 2
    assert want["gain_ci_low"] < want["gain_ci_high"]
    if task == "multilabel":
        # resamples without the single positive of the last label are left out on both paths
        assert want["n_nan"] > 0


def test_auroc_gain_with_an_undefined_member_equals_sklearn_per_resample(per_resample_calls):
    """A member row with a NaN score: that member's AUROC, so the gain, is NaN on all samples
    and on every resample that draws the row; the others set the interval."""
    targets, members = multiclass_case(3, seed=3, k=5)
    members = [p.astype(np.float64) for p in members]
    members[1][4, 2] = np.nan
    n_boot, confidence, seed = 150, 0.95, 4
    functions = {"auroc": metric_functions("multiclass")["auroc"]}
    table, _ = gain_and_reference(
        "multiclass", targets, members, functions, n_boot, confidence, seed
    )
    ensemble = np.mean(members, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = reference_row(
            sklearn_auroc("multiclass"),
            targets,
            ensemble,
            members,
            "multiclass",
            n_boot,
            confidence,
            seed,
        )
    assert not per_resample_calls
    assert np.isnan(want["gain"]) and np.isnan(want["fold_1"])
    assert 0 < want["n_nan"] < n_boot
    assert_row_equal(table.loc["auroc"], want)


def test_auroc_gain_uses_the_given_metric_when_it_is_another_auroc(per_resample_calls):
    targets, members = multiclass_case(3, seed=5, k=4)

    def weighted(t, q):
        return skm.roc_auc_score(t, q, multi_class="ovr", average="weighted", labels=range(4))

    n_boot, confidence, seed = 60, 0.95, 6
    table, ensemble = gain_and_reference(
        "multiclass", targets, members, {"auroc": weighted}, n_boot, confidence, seed
    )
    want = reference_row(
        weighted, targets, ensemble, members, "multiclass", n_boot, confidence, seed
    )
    assert len(per_resample_calls) == 1  # resampled_auroc gives another value: not used
    assert_row_equal(table.loc["auroc"], want)


def test_auroc_gain_of_one_member():
    """One member (the TTA table): no spread of the folds, the gain still bootstrapped."""
    targets, (single, views_mean) = binary_case(2, seed=7)
    members, ensemble = [single], views_mean
    functions = {"auroc": metric_functions("binary")["auroc"]}
    table = ensemble_gain(targets, ensemble, members, "binary", functions, 100, 0.95, 8)
    want = reference_row(
        sklearn_auroc("binary"), targets, ensemble, members, "binary", 100, 0.95, 8
    )
    assert np.isnan(table.loc[0, "std_of_folds"])
    assert_row_equal(table.set_index("metric").loc["auroc"], want)
