"""Point metrics, the per-class classification report, confusion matrices and ROC/PR curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from medsweep.evaluation.data import one_vs_rest

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def predicted_labels(
    probs: np.ndarray, task: str, threshold: float | np.ndarray = 0.5
) -> np.ndarray:
    """Decisions: class index (argmax; binary: positive when p >= threshold) or (N, K) 0/1."""
    if task == "binary":
        return (probs[:, 1] >= threshold).astype(np.int64)
    if task == "multilabel":
        return (probs >= np.asarray(threshold)).astype(np.int64)
    return probs.argmax(axis=1).astype(np.int64)


def _auroc(targets: np.ndarray, probs: np.ndarray, task: str) -> float:
    try:
        if task == "binary":
            return float(skm.roc_auc_score(targets, probs[:, 1]))
        if task == "multiclass":
            return float(
                skm.roc_auc_score(
                    targets, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])
                )
            )
        return float(skm.roc_auc_score(targets, probs, average="macro"))
    except ValueError:  # one class only (a resample, a label without positives)
        return float("nan")


def metric_functions(task: str, threshold: float | np.ndarray = 0.5) -> dict[str, MetricFn]:
    """Headline metrics ``fn(targets, probs)`` by the names metrics.json uses (scikit-learn)."""

    def decide(probs: np.ndarray) -> np.ndarray:
        return predicted_labels(probs, task, threshold)

    if task == "binary":
        return {
            "acc": lambda y, p: skm.accuracy_score(y, decide(p)),
            "balanced_acc": lambda y, p: skm.balanced_accuracy_score(y, decide(p)),
            "precision": lambda y, p: skm.precision_score(y, decide(p), zero_division=0),
            "recall": lambda y, p: skm.recall_score(y, decide(p), zero_division=0),
            "specificity": lambda y, p: skm.recall_score(
                y, decide(p), pos_label=0, zero_division=0
            ),
            "f1": lambda y, p: skm.f1_score(y, decide(p), zero_division=0),
            "auroc": lambda y, p: _auroc(y, p, task),
            "auprc": lambda y, p: skm.average_precision_score(y, p[:, 1]),
            "brier": lambda y, p: skm.brier_score_loss(y, p[:, 1], pos_label=1),
        }
    if task == "multiclass":

        def labels(p: np.ndarray) -> list[int]:
            return list(range(p.shape[1]))

        return {
            "acc": lambda y, p: skm.accuracy_score(y, decide(p)),
            "balanced_acc": lambda y, p: skm.recall_score(
                y, decide(p), average="macro", labels=labels(p), zero_division=0
            ),
            "precision": lambda y, p: skm.precision_score(
                y, decide(p), average="macro", labels=labels(p), zero_division=0
            ),
            "recall": lambda y, p: skm.recall_score(
                y, decide(p), average="macro", labels=labels(p), zero_division=0
            ),
            "f1": lambda y, p: skm.f1_score(
                y, decide(p), average="macro", labels=labels(p), zero_division=0
            ),
            "auroc": lambda y, p: _auroc(y, p, task),
        }
    if task == "multilabel":
        return {
            "acc": lambda y, p: float((decide(p) == y).mean()),
            "exact_match": lambda y, p: skm.accuracy_score(y, decide(p)),
            "precision": lambda y, p: skm.precision_score(
                y, decide(p), average="macro", zero_division=0
            ),
            "recall": lambda y, p: skm.recall_score(y, decide(p), average="macro", zero_division=0),
            "f1": lambda y, p: skm.f1_score(y, decide(p), average="macro", zero_division=0),
            "auroc": lambda y, p: _auroc(y, p, task),
        }
    raise ValueError(f"task={task!r}; choose binary, multiclass or multilabel")


def point_metrics(
    targets: np.ndarray, probs: np.ndarray, task: str, threshold: float | np.ndarray = 0.5
) -> dict[str, float]:
    """Every headline metric of ``metric_functions`` on the given predictions."""
    return {
        name: float(fn(targets, probs)) for name, fn in metric_functions(task, threshold).items()
    }


def classification_report(
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    classes: Sequence[str],
    threshold: float | np.ndarray = 0.5,
) -> pd.DataFrame:
    """Per class: precision, recall, F1, support and one-vs-rest AUROC (scikit-learn)."""
    k = len(classes)
    truth = one_vs_rest(targets, task, k)
    decided = predicted_labels(probs, task, threshold)
    pred = decided if task == "multilabel" else one_vs_rest(decided, task, k)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, pred, average=None, labels=list(range(k)), zero_division=0
    )
    auroc = []
    for j in range(k):
        try:
            auroc.append(float(skm.roc_auc_score(truth[:, j], probs[:, j])))
        except ValueError:
            auroc.append(float("nan"))
    return pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support.astype(int),
            "auroc": auroc,
        }
    )


def confusion_matrices(
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    classes: Sequence[str],
    threshold: float | np.ndarray = 0.5,
) -> dict[str, pd.DataFrame]:
    """Counts and row-normalised matrices: one K x K for binary/multiclass, 2 x 2 per label else."""
    decided = predicted_labels(probs, task, threshold)
    out: dict[str, pd.DataFrame] = {}
    if task == "multilabel":
        for j, label in enumerate(classes):
            names = [f"not {label}", label]
            counts = skm.confusion_matrix(targets[:, j], decided[:, j], labels=[0, 1])
            out[f"{label}"] = pd.DataFrame(counts, index=names, columns=names)
    else:
        counts = skm.confusion_matrix(targets, decided, labels=list(range(len(classes))))
        out["all"] = pd.DataFrame(counts, index=list(classes), columns=list(classes))
    for key in list(out):
        counts = out[key]
        rows = counts.sum(axis=1).replace(0, np.nan)
        out[f"{key}:normalised"] = counts.div(rows, axis=0).fillna(0.0)
    return out


def curves(
    targets: np.ndarray, probs: np.ndarray, task: str, classes: Sequence[str]
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """ROC and precision-recall curves per class (one-vs-rest), micro and macro averages.

    ``{"roc": {name: {"fpr", "tpr", "auc"}}, "pr": {name: {"recall", "precision", "ap"}}}``;
    binary tasks give the positive class only (plus the averages of both columns).
    """
    k = len(classes)
    truth = one_vs_rest(targets, task, k)
    roc: dict[str, dict] = {}
    pr: dict[str, dict] = {}
    names = [classes[1]] if task == "binary" else list(classes)
    columns = [1] if task == "binary" else list(range(k))
    for name, j in zip(names, columns):
        if truth[:, j].min() == truth[:, j].max():
            continue
        fpr, tpr, _ = skm.roc_curve(truth[:, j], probs[:, j])
        precision, recall, _ = skm.precision_recall_curve(truth[:, j], probs[:, j])
        roc[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(skm.auc(fpr, tpr))}
        pr[name] = {
            "recall": recall.tolist(),
            "precision": precision.tolist(),
            "ap": float(skm.average_precision_score(truth[:, j], probs[:, j])),
        }
    if task != "binary" and roc:
        fpr, tpr, _ = skm.roc_curve(truth.ravel(), probs.ravel())
        roc["micro"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(skm.auc(fpr, tpr))}
        grid = np.linspace(0.0, 1.0, 201)
        mean_tpr = np.mean(
            [np.interp(grid, roc[c]["fpr"], roc[c]["tpr"]) for c in classes if c in roc], axis=0
        )
        roc["macro"] = {
            "fpr": grid.tolist(),
            "tpr": mean_tpr.tolist(),
            "auc": float(np.mean([roc[c]["auc"] for c in classes if c in roc])),
        }
        precision, recall, _ = skm.precision_recall_curve(truth.ravel(), probs.ravel())
        pr["micro"] = {
            "recall": recall.tolist(),
            "precision": precision.tolist(),
            "ap": float(skm.average_precision_score(truth, probs, average="micro")),
        }
        grid_r = np.linspace(0.0, 1.0, 201)
        mean_p = np.mean(
            [
                np.interp(grid_r, pr[c]["recall"][::-1], pr[c]["precision"][::-1])
                for c in classes
                if c in pr
            ],
            axis=0,
        )
        pr["macro"] = {
            "recall": grid_r.tolist(),
            "precision": mean_p.tolist(),
            "ap": float(np.mean([pr[c]["ap"] for c in classes if c in pr])),
        }
    return {"roc": roc, "pr": pr}


def curves_frame(curve_data: dict[str, dict[str, dict[str, list[float]]]]) -> pd.DataFrame:
    """The curves of ``curves`` as one long table: curve (roc|pr), name, x (fpr|recall), y (tpr|precision)."""
    rows = []
    for kind, (x_key, y_key) in (("roc", ("fpr", "tpr")), ("pr", ("recall", "precision"))):
        for name, points in curve_data[kind].items():
            rows += [
                {"curve": kind, "name": name, "x": x, "y": y}
                for x, y in zip(points[x_key], points[y_key])
            ]
    return pd.DataFrame(rows, columns=["curve", "name", "x", "y"])
