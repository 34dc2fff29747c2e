"""Paired comparisons of two models on the same test samples: DeLong (AUROC) and McNemar (accuracy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsweep.evaluation.bootstrap import (
    matching_resampled_aurocs,
    percentile_interval,
    resample_indices,
    strata_of,
)
from medsweep.evaluation.delong import delong_test
from medsweep.evaluation.metrics import MetricFn, metric_functions, predicted_labels

NAN = float("nan")
# McNemar's chi-square approximation is used from this many discordant pairs on; below, the exact
# binomial test (the chi-square is poor with few discordant pairs).
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired correct/incorrect outcomes."""

    table: list[list[int]]
    statistic: float
    p_value: float
    method: str

    @property
    def discordant(self) -> tuple[int, int]:
        """(a right and b wrong, a wrong and b right)."""
        return self.table[0][1], self.table[1][0]


def mcnemar_table(correct_a: np.ndarray, correct_b: np.ndarray) -> list[list[int]]:
    """2x2 counts: rows a right/wrong, columns b right/wrong."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's test (statsmodels): exact binomial below 25 discordant pairs, else chi-square with
    continuity correction."""
    from statsmodels.stats.contingency_tables import mcnemar

    table = mcnemar_table(correct_a, correct_b)
    exact = table[0][1] + table[1][0] < MCNEMAR_EXACT_BELOW
    result = mcnemar(np.array(table), exact=exact, correction=True)
    method = "exact binomial" if exact else "chi-square, continuity corrected"
    return McNemar(table, float(result.statistic), float(result.pvalue), method)


def correct_per_sample(targets: np.ndarray, probs: np.ndarray, task: str) -> np.ndarray:
    """Whether each sample is classified right (multilabel: every label right; threshold 0.5)."""
    decided = predicted_labels(probs, task)
    if task == "multilabel":
        return (decided == targets).all(axis=1)
    return decided == targets


AUROC_TEST = {
    "binary": "DeLong's test: the AUROCs of two scores on the same samples are correlated, and "
    "DeLong's covariance of the two estimates accounts for that",
    "other": "paired stratified bootstrap of the macro AUROC difference: DeLong's test is for one "
    "binary AUROC, and a macro average over classes has no closed-form DeLong variance",
}
ACC_TEST = (
    "McNemar's test on the samples where exactly one model is right (exact binomial below "
    f"{MCNEMAR_EXACT_BELOW} such samples, else chi-square with continuity correction)"
)


def _resampled_auroc_diffs(
    auroc: MetricFn,
    targets: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    whole: tuple[float, float],
    task: str,
    resamples: np.ndarray,
) -> np.ndarray:
    """AUROC of a minus AUROC of b on every row of ``resamples`` (NaN where either is undefined).

    ``whole``: ``auroc`` of a and of b on all samples. All resamples are scored at once
    (``matching_resampled_aurocs``) where that gives ``auroc``'s values; other inputs are scored
    one resample at a time with ``auroc`` itself.
    """
    fast = matching_resampled_aurocs(auroc, targets, [probs_a, probs_b], task, resamples, whole)
    if fast is not None:
        return fast[0] - fast[1]
    return np.array(
        [auroc(targets[r], probs_a[r]) - auroc(targets[r], probs_b[r]) for r in resamples]
    )


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided p of "no difference" from resampled differences: twice the share on the far side
    of 0, counted as (k + 1) / (n + 1).

    The +1 counts the observed sample among the resamples, so with n resamples p is never below
    2 / (n + 1): 1,000 resamples that all favour one model give p = 0.002, not 0 (a p of 0 would
    claim more than 1,000 resamples can show).
    """
    n = len(diffs)
    far = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    return min(1.0, 2 * (far + 1) / (n + 1))


def compare_on_test(
    targets: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    task: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, object]:
    """AUROC and accuracy of a and b on the same samples, their differences, tests and p-values."""
    out: dict[str, object] = {"n": len(targets)}
    if task == "binary":
        test = delong_test(targets, probs_a[:, 1], probs_b[:, 1], confidence)
        out.update(
            auroc_a=test.auc_a,
            auroc_b=test.auc_b,
            auroc_diff=test.diff,
            auroc_ci_low=test.ci_low,
            auroc_ci_high=test.ci_high,
            auroc_p=test.p_value,
            auroc_test="DeLong",
        )
    else:
        auroc = metric_functions(task)["auroc"]
        a, b = auroc(targets, probs_a), auroc(targets, probs_b)
        diffs = _resampled_auroc_diffs(
            auroc,
            targets,
            probs_a,
            probs_b,
            (a, b),
            task,
            resample_indices(strata_of(targets, task), n_boot, seed),
        )
        diffs = diffs[np.isfinite(diffs)]
        interval = percentile_interval(a - b, diffs, confidence)
        low, high = interval.low, interval.high
        p = bootstrap_p_value(diffs) if diffs.size else NAN
        out.update(
            auroc_a=a,
            auroc_b=b,
            auroc_diff=a - b,
            auroc_ci_low=float(low),
            auroc_ci_high=float(high),
            auroc_p=float(p),
            auroc_test="paired bootstrap",
        )
    right_a = correct_per_sample(targets, probs_a, task)
    right_b = correct_per_sample(targets, probs_b, task)
    mc = mcnemar_test(right_a, right_b)
    out.update(
        acc_a=float(right_a.mean()),
        acc_b=float(right_b.mean()),
        acc_diff=float(right_a.mean() - right_b.mean()),
        only_a_right=mc.discordant[0],
        only_b_right=mc.discordant[1],
        acc_p=mc.p_value,
        acc_test=f"McNemar ({mc.method})",
    )
    return out
