"""Batch-level MixUp and CutMix (timm's ``Mixup``) on dense training targets."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from timm.data.mixup import Mixup, mixup_target

from medsweep.seeding import derived_seed

TASKS = ("binary", "multiclass", "multilabel")
MODES = ("batch", "pair", "elem")


def _timm_mixes_dense_targets() -> bool:
    """True when this timm's ``Mixup`` takes multi-hot targets (``multi_label``)."""
    return "multi_label" in inspect.signature(Mixup).parameters


class MixUpCutMix:
    """MixUp / CutMix of a training batch and its dense targets, with timm's label smoothing.

    Targets come as the module builds them: one-hot (B, K) for multiclass (handed to timm as
    class indices), a (B, 1) column for binary, multi-hot (B, K) for multilabel (both mixed as
    dense targets, smoothed toward 0.5). timm pairs sample ``i`` with ``B - 1 - i`` and needs an
    even batch: an odd batch mixes its first ``B - 1`` samples and keeps the last one unmixed
    (its target still smoothed). Lambdas come from a private numpy stream seeded by ``seed``,
    so a run's mixing does not depend on other users of numpy's global generator;
    ``set_epoch`` restarts it from (seed, epoch), so a resumed run mixes as an uninterrupted one.
    Use ``label_smoothing`` here or ``loss.label_smoothing``, not both: they would compound.
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.0,
        seed: int | None = None,
    ):
        key = "augmentation.batch_transform"
        if task not in TASKS:
            raise ValueError(f"{key}: task={task!r} is not valid; choose one of {list(TASKS)}")
        if mode not in MODES:
            raise ValueError(f"{key}.mode={mode!r} is not valid; choose one of {list(MODES)}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(
                f"{key}: mixup_alpha and cutmix_alpha must be >= 0 "
                f"(got {mixup_alpha}, {cutmix_alpha}); 0 turns that mix off"
            )
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"{key}: prob={prob} and switch_prob={switch_prob} must lie in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{key}.label_smoothing={label_smoothing} must lie in [0, 1)")
        self.task = task
        self.units = 1 if task == "binary" else int(num_classes)
        self.enabled = mixup_alpha > 0 or cutmix_alpha > 0 or cutmix_minmax is not None
        self.dense = task != "multiclass"
        self.label_smoothing = label_smoothing
        self._dense_option = {"multi_label": True} if self.dense else {}
        if self.dense and self.enabled and not _timm_mixes_dense_targets():
            raise ValueError(
                f"{key}: mixing {task} targets needs a timm whose Mixup takes "
                "multi_label (timm 1.0.31 has it); upgrade timm or set mixup_alpha=0 "
                "and cutmix_alpha=0"
            )
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=cutmix_minmax,
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            correct_lam=correct_lam,
            label_smoothing=label_smoothing,
            num_classes=self.units,
            **self._dense_option,
        )
        self.seed = seed
        self._state = None if seed is None else np.random.RandomState(seed).get_state()

    def set_epoch(self, epoch: int) -> None:
        """Restart the private stream at the one of ``epoch``: (seed, epoch) fixes an epoch's mixing."""
        if self.seed is not None:
            self._state = np.random.RandomState(
                derived_seed(self.seed, epoch, "mixing")
            ).get_state()

    @contextmanager
    def _numpy_stream(self) -> Iterator[None]:
        """Swap in this object's numpy stream: timm draws lambdas and boxes from ``np.random``."""
        if self._state is None:
            yield
            return
        outer = np.random.get_state()
        np.random.set_state(self._state)
        try:
            yield
        finally:
            self._state = np.random.get_state()
            np.random.set_state(outer)

    def _timm_targets(self, target: torch.Tensor) -> torch.Tensor:
        return target if self.dense else target.argmax(dim=1)

    def _unmixed(self, target: torch.Tensor) -> torch.Tensor:
        """Targets with label smoothing only (lambda = 1)."""
        return mixup_target(
            self._timm_targets(target),
            self.units,
            1.0,
            self.label_smoothing,
            **self._dense_option,
        )

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed images and targets (new tensors; the inputs are left as they were)."""
        if target.ndim != 2 or target.shape != (len(x), self.units):
            raise ValueError(
                f"augmentation.batch_transform expects dense {self.task} targets of "
                f"shape ({len(x)}, {self.units}); got {tuple(target.shape)}"
            )
        if not self.enabled:
            return x, target
        even = len(x) - len(x) % 2
        with self._numpy_stream():
            if even:
                mixed_x, mixed_t = self.mixup(x[:even].clone(), self._timm_targets(target[:even]))
            else:
                mixed_x, mixed_t = x[:0], target[:0]
        if even < len(x):
            mixed_x = torch.cat([mixed_x, x[even:]])
            mixed_t = torch.cat(
                [mixed_t.to(target.device), self._unmixed(target[even:]).to(target.device)]
            )
        return mixed_x, mixed_t.to(target.dtype)
