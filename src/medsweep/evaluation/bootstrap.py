"""Stratified bootstrap over test samples: percentile confidence intervals of any statistic."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from medsweep.evaluation.delong import delong_interval
from medsweep.evaluation.intervals import Interval
from medsweep.evaluation.metrics import MetricFn

NAN = float("nan")


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
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(estimate, NAN, NAN, "bootstrap", 0)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), "bootstrap", int(finite.size))


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
    """One row per metric: estimate and stratified-bootstrap CI; binary AUROC also DeLong's CI."""
    rows = []
    for name, fn in functions.items():
        interval = bootstrap_metric(fn, targets, probs, task, n_boot, confidence, seed)
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
