"""Calibration: expected/maximum calibration error, Brier score, NLL, reliability bins, and
temperature scaling fitted on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from medsweep.metrics import log_loss_of

EPS = 1e-7


def _binary_ce(p: np.ndarray, y: np.ndarray, n_bins: int, norm: str) -> float:
    return float(
        binary_calibration_error(
            torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(y), n_bins=n_bins, norm=norm
        )
    )


def calibration_errors(
    probs: np.ndarray, targets: np.ndarray, task: str, n_bins: int = 10
) -> dict[str, float]:
    """ECE and MCE (torchmetrics; binary: of the positive class, multiclass: top label,
    multilabel: mean over labels), Brier score (scikit-learn) and NLL."""
    k = probs.shape[1]
    if task == "binary":
        ece = _binary_ce(probs[:, 1], targets, n_bins, "l1")
        mce = _binary_ce(probs[:, 1], targets, n_bins, "max")
        brier = brier_score_loss(targets, probs[:, 1], pos_label=1)
    elif task == "multiclass":
        p, y = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(targets)
        ece = float(multiclass_calibration_error(p, y, k, n_bins=n_bins, norm="l1"))
        mce = float(multiclass_calibration_error(p, y, k, n_bins=n_bins, norm="max"))
        brier = brier_score_loss(targets, probs, labels=list(range(k)))
    else:
        ece = float(
            np.mean([_binary_ce(probs[:, j], targets[:, j], n_bins, "l1") for j in range(k)])
        )
        mce = float(
            np.mean([_binary_ce(probs[:, j], targets[:, j], n_bins, "max") for j in range(k)])
        )
        brier = float(
            np.mean([brier_score_loss(targets[:, j], probs[:, j], pos_label=1) for j in range(k)])
        )
    scores = probs[:, 1] if task == "binary" else probs
    return {
        "ece": ece,
        "mce": mce,
        "brier": float(brier),
        "nll": log_loss_of(np.clip(scores, EPS, 1 - EPS), targets, task, k),
    }


def reliability_bins(
    probs: np.ndarray, targets: np.ndarray, task: str, n_bins: int = 10
) -> pd.DataFrame:
    """Equal-width confidence bins: count, mean confidence and observed frequency/accuracy.

    Binary: the positive class probability against the positive frequency; multiclass: the top
    probability against accuracy; multilabel: every (sample, label) probability pooled.
    """
    if task == "binary":
        conf, hit = probs[:, 1], np.asarray(targets) == 1
    elif task == "multiclass":
        conf, hit = probs.max(axis=1), probs.argmax(axis=1) == targets
    else:
        conf, hit = probs.ravel(), np.asarray(targets).ravel() == 1
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins (lo, hi], the first also holding 0, as torchmetrics bins them
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "count": count,
                "confidence": float(conf[inside].mean()) if count else float("nan"),
                "observed": float(hit[inside].mean()) if count else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def logits_of(probs: np.ndarray, task: str) -> np.ndarray:
    """Logits that give back ``probs``: log p (softmax, multiclass) or log-odds (sigmoid)."""
    p = np.clip(probs, EPS, 1 - EPS)
    if task == "multiclass":
        return np.log(p)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs: np.ndarray, task: str, temperature: float) -> np.ndarray:
    """Probabilities with logits divided by ``temperature`` (the argmax is unchanged)."""
    z = logits_of(probs, task) / temperature
    if task == "multiclass":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    scaled = 1.0 / (1.0 + np.exp(-z))
    if task == "binary":  # both columns from the positive one
        return np.stack([1 - scaled[:, 1], scaled[:, 1]], axis=1)
    return scaled


def _nll(probs: np.ndarray, targets: np.ndarray, task: str) -> float:
    scores = probs[:, 1] if task == "binary" else probs
    return log_loss_of(np.clip(scores, EPS, 1 - EPS), targets, task, probs.shape[1])


def fit_temperature(probs: np.ndarray, targets: np.ndarray, task: str) -> float:
    """The temperature in [0.05, 20] that minimises the NLL of ``probs`` (validation); 1 unless
    it lowers the NLL."""

    def loss(log_t: float) -> float:
        return _nll(apply_temperature(probs, task, float(np.exp(log_t))), targets, task)

    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    best = float(np.exp(result.x))
    return best if loss(float(result.x)) < loss(0.0) else 1.0
