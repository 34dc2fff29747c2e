"""Task-aware losses on dense float targets (one-hot, multi-hot or a (B, 1) binary column).

The module hands every loss logits of shape (B, K) and a target of the same shape, so the same
config option works for binary, multiclass and multilabel tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss as MonaiFocalLoss
from torch import nn


def _as_tensor(value: float | Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32).reshape(-1)


def smooth_targets(target: torch.Tensor, smoothing: float, task: str) -> torch.Tensor:
    """Label smoothing: toward 1/K for multiclass, toward 0.5 for sigmoid tasks."""
    if not smoothing:
        return target
    classes = target.shape[1] if task == "multiclass" else 2
    return target * (1.0 - smoothing) + smoothing / classes


def binary_class_weights(target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
    """Per-sample weights from class weights [negative, positive] for a (B, 1) binary target."""
    if weight is None:
        return None
    return torch.where(target > 0.5, weight[1], weight[0])


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy (multiclass); for binary its exact two-class form, sigmoid BCE."""

    def __init__(
        self,
        task: str,
        label_smoothing: float = 0.0,
        weight: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        if task == "multilabel":
            raise ValueError("loss=ce does not fit task=multilabel; choose loss=bce or loss=focal")
        self.task = task
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", _as_tensor(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            if bool((target.amax(dim=1) == 1).all()):  # hard labels: torch's weighted mean
                target = target.argmax(dim=1)
            return F.cross_entropy(
                logits, target, weight=self.weight, label_smoothing=self.label_smoothing
            )
        weight = binary_class_weights(target, self.weight)
        target = smooth_targets(target, self.label_smoothing, self.task)
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


class BCEWithLogitsLoss(nn.Module):
    """Sigmoid binary cross-entropy per output (one-vs-rest for multiclass), with ``pos_weight``."""

    def __init__(
        self,
        task: str,
        pos_weight: float | Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        weight: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        self.task = task
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", _as_tensor(pos_weight), persistent=False)
        self.register_buffer("weight", _as_tensor(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # binary: class weights [negative, positive] per sample; otherwise one weight per output
        weight = binary_class_weights(target, self.weight) if self.task == "binary" else self.weight
        target = smooth_targets(target, self.label_smoothing, self.task)
        return F.binary_cross_entropy_with_logits(
            logits, target, weight=weight, pos_weight=self.pos_weight
        )


class FocalLoss(nn.Module):
    """MONAI's focal loss: softmax form for multiclass, sigmoid form otherwise."""

    def __init__(
        self,
        task: str,
        gamma: float = 2.0,
        alpha: float | None = None,
        weight: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.task = task
        self.label_smoothing = label_smoothing
        binary = task == "binary"
        # binary class weights [negative, positive] are applied per sample, not per channel
        self.register_buffer(
            "binary_weight", _as_tensor(weight) if binary else None, persistent=False
        )
        self.focal = MonaiFocalLoss(
            gamma=gamma,
            alpha=alpha,
            use_softmax=task == "multiclass",
            weight=None if binary else _as_tensor(weight),
            reduction="none" if binary else "mean",
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.focal(logits, smooth_targets(target, self.label_smoothing, self.task))
        if self.task != "binary":
            return loss
        weight = binary_class_weights(target, self.binary_weight)
        return loss.mean() if weight is None else (loss * weight).mean()
