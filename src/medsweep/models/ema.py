"""Exponential moving average of the weights, on Lightning's ``WeightAveraging`` callback."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA(WeightAveraging):
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every ``every_n_steps`` optimizer steps.

    The average (BatchNorm statistics included) is what validation sees during fit, what the
    checkpoints store as ``state_dict`` (the raw weights go to ``current_model_state``) and what
    the model holds after fit. The first update, at optimizer step ``start_step``, copies the
    weights; the average then spans about ``1 / (1 - decay)`` steps, so lower ``decay`` for
    short runs.

    Unlike the parent, the weights are swapped and the callback state restored only while
    fitting: evaluating a checkpoint after fit (``trainer.validate/test(ckpt_path=...)``) then
    sees exactly the averaged weights the checkpoint stores.
    """

    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        start_step: int = 0,
        use_buffers: bool = True,
        device: str | None = None,
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"callbacks.ema.decay={decay} must be in [0, 1]")
        if every_n_steps < 1:
            raise ValueError(f"callbacks.ema.every_n_steps={every_n_steps} must be >= 1")
        super().__init__(
            device=device, use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(decay)
        )
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.start_step = start_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After optimizer steps only: from ``start_step`` on, every ``every_n_steps``."""
        return (
            step_idx is not None
            and step_idx >= self.start_step
            and (step_idx - self.start_step) % self.every_n_steps == 0
        )

    @staticmethod
    def _fitting(trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # outside fit the checkpoint's state_dict (the average) is already loaded into the model;
        # the parent would replace it with the raw weights
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
