"""torchmetrics collections for binary, multiclass and multilabel tasks."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as C


class BalancedAccuracy(Metric):
    """Mean of sensitivity and specificity per label (binary, multilabel), averaged over labels."""

    full_state_update = False

    def __init__(self, num_labels: int = 1, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold
        for name in ("tp", "fn", "tn", "fp"):
            self.add_state(
                name, default=torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum"
            )

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        pred = (probs > self.threshold).reshape(len(probs), -1)  # as torchmetrics: above, not at
        truth = target.reshape(len(target), -1).bool()
        self.tp += (pred & truth).sum(0)
        self.fn += (~pred & truth).sum(0)
        self.tn += (~pred & ~truth).sum(0)
        self.fp += (pred & ~truth).sum(0)

    def compute(self) -> torch.Tensor:
        sens = self.tp / (self.tp + self.fn).clamp(min=1)
        spec = self.tn / (self.tn + self.fp).clamp(min=1)
        return ((sens + spec) / 2).mean()


def build_metrics(task: str, num_classes: int) -> MetricCollection:
    """Accuracy, balanced accuracy, precision, recall, F1, AUROC (macro and per class), confusion.

    Macro averages for multiclass and multilabel; the positive class for binary. Inputs are
    probabilities and integer targets: (B,) for binary and multiclass indices, (B, K) multi-hot.
    """
    if task == "binary":
        metrics = {
            "acc": C.BinaryAccuracy(),
            "balanced_acc": BalancedAccuracy(1),
            "precision": C.BinaryPrecision(),
            "recall": C.BinaryRecall(),
            "specificity": C.BinarySpecificity(),
            "f1": C.BinaryF1Score(),
            "auroc": C.BinaryAUROC(),
            "confusion": C.BinaryConfusionMatrix(),
        }
    elif task == "multiclass":
        k = num_classes
        metrics = {
            "acc": C.MulticlassAccuracy(k, average="micro"),
            "balanced_acc": C.MulticlassRecall(k, average="macro"),
            "precision": C.MulticlassPrecision(k, average="macro"),
            "recall": C.MulticlassRecall(k, average="macro"),
            "f1": C.MulticlassF1Score(k, average="macro"),
            "auroc": C.MulticlassAUROC(k, average="macro"),
            "auroc_per_class": C.MulticlassAUROC(k, average=None),
            "confusion": C.MulticlassConfusionMatrix(k),
        }
    elif task == "multilabel":
        k = num_classes
        metrics = {
            "acc": C.MultilabelAccuracy(k, average="micro"),
            "balanced_acc": BalancedAccuracy(k),
            "precision": C.MultilabelPrecision(k, average="macro"),
            "recall": C.MultilabelRecall(k, average="macro"),
            "f1": C.MultilabelF1Score(k, average="macro"),
            "auroc": C.MultilabelAUROC(k, average="macro"),
            "auroc_per_class": C.MultilabelAUROC(k, average=None),
            "hamming_acc": C.MultilabelHammingDistance(k, average="micro"),
            "exact_match": C.MultilabelExactMatch(k),
            "confusion": C.MultilabelConfusionMatrix(k),
        }
    else:
        raise ValueError(f"task={task!r} is not valid; choose binary, multiclass or multilabel")
    return MetricCollection(metrics)


def flatten_results(
    raw: dict[str, torch.Tensor], classes: list[str]
) -> tuple[dict[str, float], list]:
    """Scalar metrics (per-class AUROC as ``auroc/<class>``) and the confusion matrix as lists."""
    scalars: dict[str, float] = {}
    confusion: list = []
    for name, value in raw.items():
        if name == "confusion":
            confusion = value.cpu().tolist()
        elif name == "auroc_per_class":
            scalars.update({f"auroc/{c}": float(v) for c, v in zip(classes, value.cpu())})
        elif name == "hamming_acc":
            scalars[name] = 1.0 - float(value)  # torchmetrics gives the distance
        else:
            scalars[name] = float(value)
    return scalars, confusion


def evaluate_probabilities(
    probs: np.ndarray, targets: np.ndarray, task: str, classes: list[str]
) -> tuple[dict[str, float], list]:
    """``build_metrics``' metrics plus the log-loss, from probabilities and integer targets."""
    collection = build_metrics(task, len(classes))
    # float64 as scikit-learn gives them, so that no ties appear that the estimator did not make
    collection.update(torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(targets))
    metrics, confusion = flatten_results(collection.compute(), classes)
    return {"loss": log_loss_of(probs, targets, task, len(classes)), **metrics}, confusion


def log_loss_of(probs: np.ndarray, targets: np.ndarray, task: str, num_classes: int) -> float:
    """Cross-entropy (multiclass) or binary cross-entropy averaged over labels, like the losses."""
    from sklearn.metrics import log_loss  # after training: not among the imports before step 1

    if task == "multiclass":
        return float(log_loss(targets, probs, labels=list(range(num_classes))))
    if task == "binary":
        return float(log_loss(targets, probs, labels=[0, 1]))
    return float(
        np.mean(
            [log_loss(targets[:, j], probs[:, j], labels=[0, 1]) for j in range(targets.shape[1])]
        )
    )
