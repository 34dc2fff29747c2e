"""Decision thresholds chosen on validation (max F1, Youden's J, target recall), applied to test.

A sample is called positive when its probability is at least the threshold (``p >= t``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from medsweep.evaluation.data import one_vs_rest
from medsweep.results import write_json_atomic

METHODS = ("max_f1", "youden", "target_recall")
THRESHOLDS_FILE = "thresholds.json"


def choose_threshold(
    y: np.ndarray, score: np.ndarray, method: str = "max_f1", target_recall: float = 0.95
) -> float:
    """One binary threshold on ``score`` for 0/1 ``y``.

    ``max_f1``: the threshold of the highest F1 on the precision-recall curve; ``youden``: of the
    highest sensitivity + specificity - 1 on the ROC curve; ``target_recall``: the highest
    threshold whose recall reaches ``target_recall``.
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"eval.threshold.method={method!r}; choose one of {', '.join(METHODS)}")
    if y.min() == y.max():
        return 0.5  # one class only: nothing to choose from
    if method == "max_f1":
        precision, recall, thresholds = precision_recall_curve(y, score)
        p, r = precision[:-1], recall[:-1]
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        return float(thresholds[int(np.argmax(f1))])
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    if method == "youden":
        j = tpr[1:] - fpr[1:]  # the first point is the threshold +inf
        return float(thresholds[1 + int(np.argmax(j))])
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"eval.threshold.target_recall={target_recall}; choose a value in (0, 1]")
    reached = np.flatnonzero(tpr[1:] >= target_recall - 1e-12)
    return float(thresholds[1 + int(reached[0])])


def choose_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    task: str,
    classes: Sequence[str],
    method: str = "max_f1",
    target_recall: float = 0.95,
    per_class: bool = False,
) -> dict[str, float]:
    """Thresholds by class name: the positive class (binary), each label (multilabel), each class
    one-vs-rest (multiclass with ``per_class``); empty for multiclass argmax decisions."""
    if task == "binary":
        return {classes[1]: choose_threshold(targets, probs[:, 1], method, target_recall)}
    if task == "multiclass" and not per_class:
        return {}
    truth = one_vs_rest(targets, task, len(classes))
    return {
        c: choose_threshold(truth[:, j], probs[:, j], method, target_recall)
        for j, c in enumerate(classes)
    }


def threshold_vector(thresholds: dict[str, float], classes: Sequence[str], task: str):
    """The thresholds as ``predicted_labels`` takes them (a float for binary, else (K,))."""
    if task == "binary":
        return thresholds.get(classes[1], 0.5)
    return np.array([thresholds.get(c, 0.5) for c in classes])


def decisions(
    probs: np.ndarray, task: str, classes: Sequence[str], thresholds: dict[str, float]
) -> np.ndarray:
    """Positive calls (N, K) 0/1 under ``thresholds`` (binary: column of the positive class only;
    multiclass one-vs-rest: class k called when p_k >= t_k)."""
    if task == "binary":
        return (probs[:, 1:2] >= thresholds.get(classes[1], 0.5)).astype(np.int64)
    return (probs >= threshold_vector(thresholds, classes, task)).astype(np.int64)


def write_thresholds(
    path: str | Path,
    thresholds: dict[str, float],
    task: str,
    classes: Sequence[str],
    method: str,
    target_recall: float | None = None,
    per_class: bool = False,
) -> Path:
    """Store the chosen thresholds (``eval/thresholds.json``) for prediction and the app."""
    path = Path(path)
    rule = (
        "argmax over classes"
        if not thresholds
        else "positive when probability >= threshold"
        + (" (one-vs-rest per class)" if task == "multiclass" else "")
    )
    write_json_atomic(
        path,
        {
            "task": task,
            "classes": list(classes),
            "method": method if thresholds else "argmax",
            "target_recall": target_recall if method == "target_recall" else None,
            "per_class": per_class,
            "chosen_on": "val",
            "rule": rule,
            "thresholds": thresholds,
        },
    )
    return path


def load_thresholds(run_dir: str | Path) -> dict | None:
    """The thresholds stored with a run (``run_dir/eval/thresholds.json``), or None."""
    path = Path(run_dir) / "eval" / THRESHOLDS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
