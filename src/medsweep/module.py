"""The task-agnostic LightningModule: binary, multiclass and multilabel classification."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from medsweep.metrics import build_metrics, flatten_results

STAGES = ("train", "val", "test")


def dense_targets(target: torch.Tensor, task: str, units: int) -> torch.Tensor:
    """Float targets shaped like the logits: one-hot (multiclass), (B, 1) (binary), multi-hot."""
    if task == "multiclass":
        return F.one_hot(target, units).float()
    if task == "binary":
        return target.float().view(-1, 1)
    return target.float()


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax for multiclass; sigmoid otherwise ((B,) for binary)."""
    if task == "multiclass":
        return logits.softmax(dim=1)
    probs = logits.sigmoid()
    return probs.view(-1) if task == "binary" else probs


class ClassificationModule(L.LightningModule):
    """Trains ``model`` with ``loss``; optimizer and scheduler come as partials from the config."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable,
        task: str,
        classes: list[str],
        scheduler: Callable | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
        backbone_lr_scale: float = 1.0,
        batch_transform: Callable | None = None,
        channels_last: bool = False,
        compile: bool | dict = False,
    ):
        super().__init__()
        self.model = model
        # NHWC weights and inputs: faster convolutions on GPUs with tensor cores (AMP)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            # compiled in place: the state dict (checkpoints) keeps the plain module's keys
            self.model.compile(**(dict(compile) if isinstance(compile, dict) else {}))
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.backbone_lr_scale = backbone_lr_scale
        self.batch_transform = batch_transform
        self.task = task
        self.classes = list(classes)
        self.units = 1 if task == "binary" else len(self.classes)
        self.metrics = nn.ModuleDict(
            {f"{s}_metrics": build_metrics(task, len(self.classes)) for s in STAGES}
        )
        self.results: dict[str, dict] = {}
        # stages whose per-sample probabilities and targets are kept (the final evaluation)
        self.collect: set[str] = set()
        self.collected: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # per stage, this epoch's batches: probabilities and targets (the metrics are updated
        # once, at the epoch's end) and the batch-size-weighted loss sum and sample count
        self._batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._loss_sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.save_hyperparameters({"task": task, "classes": self.classes})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        target = dense_targets(y, self.task, self.units)
        mixed = stage == "train" and self.batch_transform is not None
        if mixed:
            x, target = self.batch_transform(x, target)
        # loss and probabilities in float32 under mixed precision (bf16 softmax sums to 1 +- 1e-3)
        logits = self(x).float()
        loss = self.loss_fn(logits, target)
        self._add_loss(stage, loss.detach(), len(x))
        if not mixed:  # metrics on soft (mixed) targets would be meaningless
            probs = probabilities(logits.detach(), self.task)
            y = y.int() if self.task == "multilabel" else y
            self._batches.setdefault(stage, []).append((probs, y))
            if stage in self.collect:
                self.collected.setdefault(stage, []).append((probs.float().cpu(), y.cpu()))
        return loss

    def _add_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """Add a batch's loss to its stage's epoch mean, weighted by the batch size.

        The same arithmetic as ``self.log(..., on_epoch=True, batch_size=n)`` reduces with (a sum
        of value * n in the default float type, divided by the summed n), without the logger's
        cost on every step: the epoch's mean is logged once, at the epoch's end.
        """
        if loss.dtype not in (torch.float32, torch.float64):
            loss = loss.to(torch.get_default_dtype())
        total, count = self._loss_sums.get(stage) or (
            torch.tensor(0.0, dtype=torch.get_default_dtype(), device=loss.device),
            torch.tensor(0, device=loss.device),
        )
        self._loss_sums[stage] = (total + loss.mean() * batch_size, count + batch_size)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def take_collected(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The probabilities and targets kept for ``stage``, in loader order; clears them."""
        batches = self.collected.pop(stage, [])
        if not batches:
            return torch.empty(0), torch.empty(0)
        probs, targets = (torch.cat(parts) for parts in zip(*batches))
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # each rank saw every world_size-th sample of the (padded) list: interleave them back
            probs, targets = (self._interleave(self.all_gather(t)) for t in (probs, targets))
        return probs.cpu(), targets.cpu()

    @staticmethod
    def _interleave(gathered: torch.Tensor) -> torch.Tensor:
        """(world, n, ...) from all ranks -> (world * n, ...) in the distributed sampler's order."""
        return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return probabilities(self(x).float(), self.task)

    def _epoch_end(self, stage: str) -> None:
        """Log the stage's mean loss and its metrics, computed once from the epoch's batches."""
        sums = self._loss_sums.pop(stage, None)
        if sums is not None:
            total, count = sums
            # logged as one value of batch size 1: the logger's mean of it is the value itself
            self.log(
                f"{stage}/loss",
                total / count,
                on_step=False,
                on_epoch=True,
                prog_bar=stage != "test",
                batch_size=1,
            )
        batches = self._batches.pop(stage, None)
        if not batches:
            return
        collection = self.metrics[f"{stage}_metrics"]
        try:
            # one update with the whole epoch: the same counts and the same sorted scores as an
            # update per batch (every metric here sums counts or keeps all the scores)
            probs, targets = (torch.cat(parts) for parts in zip(*batches))
            collection.update(probs, targets)
            raw = collection.compute()
        finally:
            collection.reset()
        scalars, confusion = flatten_results(raw, self.classes)
        self.log_dict({f"{stage}/{k}": v for k, v in scalars.items()}, prog_bar=False)
        self.results[stage] = {"metrics": scalars, "confusion": confusion}

    def _epoch_start(self, stage: str) -> None:
        # an epoch cut short (an exception, an interrupted sanity check) leaves nothing behind
        self._batches.pop(stage, None)
        self._loss_sums.pop(stage, None)

    def on_train_epoch_start(self) -> None:
        self._epoch_start("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_start("test")

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def parameter_groups(self, lr: float) -> list[dict]:
        """Backbone and head groups; the backbone's learning rate is scaled by ``backbone_lr_scale``."""
        backbone = getattr(self.model, "backbone", None)
        head = getattr(self.model, "head", None)
        if backbone is None or head is None or self.backbone_lr_scale == 1.0:
            return [{"params": list(self.model.parameters()), "name": "all"}]
        return [
            {
                "params": list(backbone.parameters()),
                "lr": lr * self.backbone_lr_scale,
                "name": "backbone",
            },
            {"params": list(head.parameters()), "lr": lr, "name": "head"},
        ]

    def configure_optimizers(self):
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr", 1e-3)
        optimizer = self.optimizer_factory(self.parameter_groups(lr))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {
            "scheduler": self.scheduler_factory(optimizer),
            "interval": self.scheduler_interval,
        }
        if self.scheduler_monitor:
            scheduler["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
