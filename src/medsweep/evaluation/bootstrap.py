"""Stratified bootstrap over test samples: percentile confidence intervals of any statistic."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from medsweep.evaluation.delong import delong_interval
from medsweep.evaluation.intervals import Interval
from medsweep.evaluation.metrics import MetricFn

NAN = float("nan")
# Resampled scores ranked at once, in elements (resamples x samples): about 8 MB per float array,
# so memory stays bounded for large test sets while small ones are done in one chunk.
AUROC_CHUNK_ELEMENTS = 1_000_000


def strata_of(targets: np.ndarray, task: str) -> np.ndarray:
    """Bootstrap strata: the class (binary, multiclass) or the label pattern (multilabel).

    Multilabel patterns seen once are pooled into one stratum, so each stratum can be resampled.
    """
    targets = np.asarray(targets)
    if task != "multilabel":
        return targets.astype(np.int64)
    _, codes, counts = np.unique(targets, axis=0, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    rare = counts[codes] < 2
    codes = codes.copy()
    codes[rare] = -1
    return codes


def resample_indices(strata: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, N) row indices, each row drawn with replacement within every stratum."""
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    out = np.empty((n_boot, len(strata)), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        out[:, members] = rng.choice(members, size=(n_boot, len(members)), replace=True)
    return out


def percentile_interval(estimate: float, values: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile interval of the finite resampled ``values`` around ``estimate``.

    Resamples where the statistic is undefined (NaN) are left out and ``n_valid`` counts the
    others; with none left the bounds are NaN.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(estimate, NAN, NAN, "bootstrap", 0)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), "bootstrap", int(finite.size))


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float],
    strata: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of ``statistic(rows)`` over stratified resamples of the rows."""
    n = len(strata)
    estimate = float(statistic(np.arange(n)))
    values = np.array([statistic(rows) for rows in resample_indices(strata, n_boot, seed)])
    return percentile_interval(estimate, values, confidence)


def _auroc_columns(
    targets: np.ndarray, probs: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per sample: one-vs-rest positives (N, C), the scores ranked for them (N, C) and whether
    scikit-learn accepts the sample's scores (N,); None for inputs outside the cases below.

    The cases mirror ``metric_functions(task)["auroc"]``: binary scores the second column against
    target 1; multiclass scores every column against its class (the labels 0..K-1, K >= 3), and
    scikit-learn refuses a resample holding a sample whose probabilities do not sum to 1
    (``np.allclose``); multilabel scores every column against its 0/1 label (K >= 2). A sample
    with a non-finite score is refused in every task. Anything else (other label values, shapes) returns None so the
    caller can score those resamples with the metric itself.
    """
    targets = np.asarray(targets)
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(targets) != len(probs) or targets.dtype.kind not in "biuf":
        return None
    if task == "binary":
        if targets.ndim != 1 or probs.shape[1] < 2 or not np.isin(targets, (0, 1)).all():
            return None
        scores = probs[:, 1:2].astype(np.float64)
        positives = (targets == 1)[:, None]
        valid = np.isfinite(scores[:, 0])
    elif task == "multiclass":
        k = probs.shape[1]
        if targets.ndim != 1 or k < 3 or not np.isin(targets, np.arange(k)).all():
            return None
        scores = probs.astype(np.float64)
        positives = targets[:, None] == np.arange(k)[None, :]
        valid = np.isfinite(scores).all(axis=1)
        valid &= np.isclose(1, probs.sum(axis=1))
    elif task == "multilabel":
        if targets.shape != probs.shape or probs.shape[1] < 2 or not np.isin(targets, (0, 1)).all():
            return None
        scores = probs.astype(np.float64)
        positives = targets == 1
        valid = np.isfinite(scores).all(axis=1)
    else:
        return None
    return positives, np.where(np.isfinite(scores), scores, 0.0), valid


def resampled_auroc(
    targets: np.ndarray, probs: np.ndarray, task: str, resamples: np.ndarray
) -> np.ndarray | None:
    """The AUROC of ``metric_functions(task)["auroc"]`` on every row of ``resamples``, shape
    (n_boot,); None where the inputs are outside what it reproduces (see ``_auroc_columns``).

    Each class's AUROC is the Mann-Whitney statistic of its resampled scores: with midranks
    (scipy's ``rankdata``), (rank sum of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    which counts tied positive-negative pairs 1/2 as scikit-learn's ROC area does. A class
    without positives or without negatives in a resample is NaN there, and so is the macro mean
    over classes, as with scikit-learn; so is a resample that draws a sample whose scores
    scikit-learn refuses. Resamples are ranked in chunks of at most ``AUROC_CHUNK_ELEMENTS``
    values, so memory does not grow with the number of resamples.
    """
    columns = _auroc_columns(targets, probs, task)
    if columns is None:
        return None
    positives, scores, valid = columns
    positives, scores = np.ascontiguousarray(positives.T), np.ascontiguousarray(scores.T)
    resamples = np.asarray(resamples, dtype=np.int64)
    n_boot, size = resamples.shape
    out = np.empty(n_boot, dtype=np.float64)
    step = max(1, AUROC_CHUNK_ELEMENTS // max(size, 1))
    for start in range(0, n_boot, step):
        rows = resamples[start : start + step]
        per_class = np.empty((len(rows), len(scores)), dtype=np.float64)
        for c in range(len(scores)):
            pos = positives[c][rows]
            n_pos = pos.sum(axis=1).astype(np.float64)
            n_neg = size - n_pos
            ranks = rankdata(scores[c][rows], axis=1)
            rank_sum = np.where(pos, ranks, 0.0).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            per_class[:, c] = np.where((n_pos > 0) & (n_neg > 0), auc, NAN)
        macro = per_class.mean(axis=1)
        macro[~valid[rows].all(axis=1)] = NAN
        out[start : start + len(rows)] = macro
    return out


def matching_resampled_auroc(
    fn: MetricFn,
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    resamples: np.ndarray,
    value: float | None = None,
) -> np.ndarray | None:
    """``resampled_auroc`` on ``resamples``, provided it gives ``fn``'s own value on all samples.

    ``value``: ``fn(targets, probs)`` when the caller has it. None when ``resampled_auroc`` does
    not cover the inputs or disagrees with ``fn`` there (another AUROC definition) by more than
    1e-12: the caller then scores each resample with ``fn`` itself.
    """
    value = float(fn(targets, probs)) if value is None else value
    whole = resampled_auroc(targets, probs, task, np.arange(len(targets))[None, :])
    if whole is None:
        return None
    same = np.isclose(whole[0], value, rtol=0, atol=1e-12) or (
        np.isnan(whole[0]) and np.isnan(value)
    )
    return resampled_auroc(targets, probs, task, resamples) if same else None


def matching_resampled_aurocs(
    fn: MetricFn,
    targets: np.ndarray,
    predictions: Sequence[np.ndarray],
    task: str,
    resamples: np.ndarray,
    values: Sequence[float],
) -> list[np.ndarray] | None:
    """``matching_resampled_auroc`` of each of ``predictions`` (``values``: ``fn`` of each on all
    samples) on the same resamples; None as soon as one of them is not reproduced."""
    scores = []
    for probs, value in zip(predictions, values, strict=True):
        score = matching_resampled_auroc(fn, targets, probs, task, resamples, value)
        if score is None:
            return None
        scores.append(score)
    return scores


def bootstrap_auroc(
    fn: MetricFn,
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``bootstrap_metric(fn, ...)`` for ``fn`` the AUROC of ``metric_functions(task)``, with all
    resamples scored at once by ``resampled_auroc``.

    The estimate is ``fn`` on all samples. Should ``fn`` disagree with ``resampled_auroc`` there
    (another AUROC definition) or the inputs be outside what that reproduces, every resample is
    scored with ``fn`` instead, so the interval is always that of ``fn``.
    """
    estimate = float(fn(targets, probs))
    resamples = resample_indices(strata_of(targets, task), n_boot, seed)
    values = matching_resampled_auroc(fn, targets, probs, task, resamples, estimate)
    if values is None:
        return bootstrap_metric(fn, targets, probs, task, n_boot, confidence, seed)
    return percentile_interval(estimate, values, confidence)


def bootstrap_metric(
    fn: MetricFn,
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Stratified-bootstrap interval of one metric ``fn(targets, probs)``."""
    return bootstrap_statistic(
        lambda rows: fn(targets[rows], probs[rows]),
        strata_of(targets, task),
        n_boot,
        confidence,
        seed,
    )


def metrics_with_ci(
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    functions: Mapping[str, MetricFn],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per metric: estimate and stratified-bootstrap CI; binary AUROC also DeLong's CI.

    The metric named "auroc" is bootstrapped by ``bootstrap_auroc`` (every resample at once; the
    same interval as ``bootstrap_metric``).
    """
    rows = []
    for name, fn in functions.items():
        bootstrap = bootstrap_auroc if name == "auroc" else bootstrap_metric
        interval = bootstrap(fn, targets, probs, task, n_boot, confidence, seed)
        row = {"metric": name, **{k: v for k, v in interval.to_dict().items() if k != "method"}}
        row.update({"ci": "bootstrap", "delong_low": NAN, "delong_high": NAN})
        if name == "auroc" and task == "binary":
            delong = delong_interval(targets, probs[:, 1], confidence)
            row.update({"delong_low": delong.low, "delong_high": delong.high})
        rows.append(row)
    frame = pd.DataFrame(rows).rename(columns={"low": "ci_low", "high": "ci_high"})
    frame["n_boot"] = n_boot
    frame["confidence"] = confidence
    return frame
