"""Task-aware losses on dense float targets (one-hot, multi-hot or a (B, 1) binary column).

The module hands every loss logits of shape (B, K) and a target of the same shape, so the same
config option works for binary, multiclass and multilabel tasks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
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


# the balance option's loss arguments, by the key that asks for them, and losses that take them
BALANCE_KEYS = {
    "weight": ("balance.class_weights", "loss=ce, loss=bce or loss=focal"),
    "pos_weight": ("balance.pos_weight", "loss=bce or loss=asymmetric"),
}


def loss_arguments(
    target: Callable, task: str, balance: Mapping[str, torch.Tensor] | None = None
) -> dict:
    """The arguments the pipeline passes to the loss ``target``: those its signature takes.

    ``task`` goes to a loss with a ``task`` parameter; the balance option's ``weight`` and
    ``pos_weight`` to one that names them or takes ``**kwargs``. A weight the loss cannot take
    stops the run naming the balance key, as does a binary task's per-sample [negative, positive]
    class weights for a loss outside this module (it would read them as one weight per output).
    """
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    name = f"{target.__module__}.{target.__qualname__}"
    kwargs: dict = {"task": task} if "task" in params else {}
    for key, value in (balance or {}).items():
        config_key, losses = BALANCE_KEYS.get(key, (f"balance.{key}", "another loss"))
        if not (takes_any or key in params):
            raise ValueError(
                f"{config_key} does not fit loss={name}: it takes "
                f"{sorted(set(params) - {'task'})}; use {losses}"
            )
        if key == "weight" and task == "binary" and target.__module__ != __name__:
            raise ValueError(
                f"{config_key} on a binary task weighs each sample by its class [negative, "
                f"positive], which loss={name} does not do; use {losses}, or balance=oversample"
            )
        kwargs[key] = value
    return kwargs


def check_loss_output(
    loss: Callable, logits: torch.Tensor, target: torch.Tensor, name: str
) -> None:
    """Fail early, naming the loss, when it cannot take this task's logits and targets."""
    try:
        with torch.no_grad():
            value = loss(logits, target)
    except Exception as exc:
        raise ValueError(
            f"loss={name} does not take logits {tuple(logits.shape)} and targets "
            f"{tuple(target.shape)} of this task: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"loss={name} returns {shape}, not one number; set its reduction")


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
    """MONAI's focal loss: softmax form for multiclass, sigmoid form otherwise.

    ``alpha`` keeps MONAI's meaning. Softmax (multiclass): a number weights class 0 by
    ``1 - alpha`` and every other class by ``alpha``; a list gives class ``c`` the weight
    ``alpha[c]``. Sigmoid (binary, multilabel): a number weights the positive term of every output
    by ``alpha`` and the negative term by ``1 - alpha``; a list weights the positive term of output
    ``c`` by ``alpha[c]`` and leaves the negative term at 1 (positives are targets > 0.5 before
    label smoothing, so smoothing does not switch the weights off).
    """

    def __init__(
        self,
        task: str,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.task = task
        self.label_smoothing = label_smoothing
        alpha_t = _as_tensor(alpha)
        if alpha_t is not None and not bool(((alpha_t >= 0) & (alpha_t <= 1)).all()):
            raise ValueError(f"loss.alpha={alpha} must lie in [0, 1]")
        per_output = alpha is not None and not isinstance(alpha, (int, float))
        if per_output and task == "binary" and len(alpha_t) != 1:
            raise ValueError(
                f"loss.alpha={list(alpha)} on a binary task (one output): give one number, the "
                "positive term's weight (the negative term gets 1 - alpha)"
            )
        # a per-output alpha on a sigmoid task is applied here, on the unsmoothed positives
        self.register_buffer(
            "positive_alpha",
            alpha_t if per_output and task != "multiclass" else None,
            persistent=False,
        )
        binary = task == "binary"
        # binary class weights [negative, positive] are applied per sample, not per channel
        self.register_buffer(
            "binary_weight", _as_tensor(weight) if binary else None, persistent=False
        )
        from monai.losses import FocalLoss as MonaiFocalLoss  # MONAI loads only with this loss

        self.focal = MonaiFocalLoss(
            gamma=gamma,
            alpha=None if self.positive_alpha is not None else alpha,
            use_softmax=task == "multiclass",
            weight=None if binary else _as_tensor(weight),
            reduction="none",
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.focal(logits, smooth_targets(target, self.label_smoothing, self.task))
        if self.positive_alpha is not None:
            if len(self.positive_alpha) != target.shape[1]:
                raise ValueError(
                    f"loss.alpha has {len(self.positive_alpha)} values for {target.shape[1]} outputs"
                )
            loss = loss * torch.where(target > 0.5, self.positive_alpha, 1.0)
        if self.task == "binary":
            weight = binary_class_weights(target, self.binary_weight)
            if weight is not None:
                loss = loss * weight
        return loss.mean()
