"""Fold ensembles: the k fold models' averaged probabilities on their shared test set."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from medsweep.evaluation.bootstrap import (
    bootstrap_statistic,
    matching_resampled_aurocs,
    percentile_interval,
    resample_indices,
    strata_of,
)
from medsweep.evaluation.data import EvalData, Part, common_test_order
from medsweep.evaluation.metrics import MetricFn


def ensemble_part(parts: Sequence[Part]) -> tuple[Part, list[Part]]:
    """The mean of the members' test probabilities, and the members aligned to its sample order."""
    orders = common_test_order(parts)
    aligned = [part.take(order) for part, order in zip(parts, orders)]
    for n, part in enumerate(aligned[1:], start=1):
        if not np.array_equal(part.targets, aligned[0].targets):
            raise ValueError(f"member {n} has other targets for the shared test samples")
    mean = np.mean([part.probs for part in aligned], axis=0)
    first = aligned[0]
    return Part(mean, first.targets, first.index, first.ids), aligned


def out_of_fold(parts: Sequence[Part]) -> Part:
    """Validation parts of the folds stacked: each sample predicted by the model that held it out."""
    return Part(
        np.concatenate([p.probs for p in parts]),
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.index for p in parts]),
        [i for p in parts for i in p.ids],
        np.concatenate([p.fold if p.fold is not None else np.zeros(len(p), int) for p in parts]),
    )


def fold_ensemble(members: Sequence[EvalData]) -> tuple[EvalData, list[Part]]:
    """An ``EvalData`` for the ensemble of ``members`` (fold runs of one configuration).

    Test: the averaged probabilities; validation: the members' out-of-fold predictions pooled
    (thresholds and temperature of the ensemble are chosen on those). Also returns the members'
    aligned test parts.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    for m in members[1:]:
        if m.task != first.task or m.classes != first.classes:
            raise ValueError(f"{m.name}: task or classes differ from {first.name}")
    if any(m.test is None for m in members):
        raise ValueError("every member needs test predictions for a fold ensemble")
    test, aligned = ensemble_part([m.test for m in members])
    vals = [m.val for m in members if m.val is not None]
    val = out_of_fold(vals) if vals else None
    data = EvalData(
        first.task,
        first.classes,
        val,
        test,
        name=first.name,
        run_dirs=[d for m in members for d in m.run_dirs],
        record=first.record,
    )
    return data, aligned


def _gain_statistic(
    fn: MetricFn,
    targets: np.ndarray,
    ensemble_probs: np.ndarray,
    member_probs: Sequence[np.ndarray],
) -> Callable[[np.ndarray], float]:
    """``fn`` of the ensemble minus the mean ``fn`` of the members, on the given rows."""

    def gain(rows: np.ndarray) -> float:
        y = targets[rows]
        singles = [fn(y, p[rows]) for p in member_probs]
        return fn(y, ensemble_probs[rows]) - float(np.mean(singles))

    return gain


def _resampled_auroc_gains(
    fn: MetricFn,
    targets: np.ndarray,
    predictions: Sequence[np.ndarray],
    whole: Sequence[float],
    task: str,
    resamples: np.ndarray,
) -> np.ndarray | None:
    """AUROC ``fn`` of ``predictions[0]`` (the ensemble) minus its mean over the others (the
    members) on every row of ``resamples``, all scored at once (``matching_resampled_aurocs``);
    NaN where any of them is undefined.

    ``whole`` holds ``fn``'s values of ``predictions`` on all samples. None when the resampled
    AUROC does not cover the inputs or does not give those values (``fn`` is another AUROC), so
    the caller scores each resample with ``fn`` instead.
    """
    scores = matching_resampled_aurocs(fn, targets, predictions, task, resamples, whole)
    if scores is None:
        return None
    # (n_boot, k) with the members along the contiguous axis: each row averaged as np.mean
    # averages the k values of one resample
    members = np.stack(scores[1:], axis=1)
    return scores[0] - members.mean(axis=1)


def ensemble_gain(
    targets: np.ndarray,
    ensemble_probs: np.ndarray,
    member_probs: Sequence[np.ndarray],
    task: str,
    functions: Mapping[str, MetricFn],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per metric: the ensemble, the mean of the single members and the gain, with the stratified
    bootstrap CI of the gain (members and ensemble scored on the same resamples).

    The metric named "auroc" is scored on all resamples at once by ``resampled_auroc`` when that
    gives its values (the same interval as scoring each resample with it), otherwise, like every
    other metric, one resample at a time.
    """
    rows = []
    strata = strata_of(targets, task)
    for name, fn in functions.items():
        ensemble = fn(targets, ensemble_probs)
        singles = [fn(targets, p) for p in member_probs]
        gains = None
        if name == "auroc":
            gains = _resampled_auroc_gains(
                fn,
                targets,
                [ensemble_probs, *member_probs],
                [ensemble, *singles],
                task,
                resample_indices(strata, n_boot, seed),
            )
        if gains is None:
            statistic = _gain_statistic(fn, targets, ensemble_probs, member_probs)
            interval = bootstrap_statistic(statistic, strata, n_boot, confidence, seed)
        else:
            estimate = float(ensemble - float(np.mean(singles)))
            interval = percentile_interval(estimate, gains, confidence)
        rows.append(
            {
                "metric": name,
                "ensemble": ensemble,
                "mean_of_folds": float(np.mean(singles)),
                "std_of_folds": float(np.std(singles, ddof=1))
                if len(singles) > 1
                else float("nan"),
                "gain": interval.estimate,
                "gain_ci_low": interval.low,
                "gain_ci_high": interval.high,
                **{f"fold_{i}": v for i, v in enumerate(singles)},
            }
        )
    return pd.DataFrame(rows)
