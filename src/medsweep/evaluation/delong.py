"""DeLong's method for AUROC: variance, confidence interval, and the paired test of two AUROCs.

The fast form of DeLong, DeLong & Clarke-Pearson (1988) with the midrank computation of Sun &
Xu (2014): placement values V10 (per positive) and V01 (per negative) from midranks; the
covariance of the AUROCs of several score vectors on the same samples is S10/m + S01/n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from medsweep.evaluation.intervals import Interval


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata 'average')."""
    return stats.rankdata(x, method="average")


def placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs (M,), placement values V10 (M, m positives) and V01 (M, n negatives).

    ``scores``: (N,) or (M, N), higher means positive; ``y`` 0/1.
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong needs positive and negative samples")
    aucs, v10, v01 = [], [], []
    for s in scores:
        pos, neg = s[y], s[~y]
        rank_all = _midranks(np.concatenate([pos, neg]))
        rank_pos, rank_neg = _midranks(pos), _midranks(neg)
        # V10_i: share of negatives below positive i (ties count half); V01_j likewise above
        v10.append((rank_all[:m] - rank_pos) / n)
        v01.append(1.0 - (rank_all[m:] - rank_neg) / m)
        aucs.append(float(np.mean(v10[-1])))
    return np.array(aucs), np.array(v10), np.array(v01)


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (M,) and their (M, M) covariance by DeLong's method."""
    aucs, v10, v01 = placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def delong_interval(y: np.ndarray, score: np.ndarray, confidence: float = 0.95) -> Interval:
    """AUROC with DeLong's normal-approximation interval, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y, score)
    auc, se = float(aucs[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    return Interval(auc, max(0.0, auc - z * se), min(1.0, auc + z * se), "delong", len(y))


@dataclass(frozen=True)
class DelongTest:
    """DeLong's paired test of AUROC(a) - AUROC(b) on the same samples."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def delong_test(
    y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, confidence: float = 0.95
) -> DelongTest:
    """Two-sided DeLong test of the AUROC difference of two scores on the same samples."""
    aucs, cov = delong_covariance(y, np.vstack([score_a, score_b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0 else (float("inf") * np.sign(diff), 0.0)
    else:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    half = stats.norm.ppf(0.5 + confidence / 2) * se
    return DelongTest(
        float(aucs[0]), float(aucs[1]), diff, se, float(z), p, diff - half, diff + half
    )
