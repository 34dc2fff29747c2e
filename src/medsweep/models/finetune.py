"""Fine-tuning policies: which backbone stages train in which epoch, as Lightning callbacks.

Stages come from timm's own layer grouping (``backbone.group_matcher(coarse=True)``: the stem,
then one group per stage or block); layers the matcher leaves out (a final norm) join the last
stage. Backbones without a matcher (the ``small_cnn`` / ``mlp`` baselines) get one stage per
child of their top-level ``nn.Sequential`` containers (``.stages``). Frozen stages keep their
BatchNorm layers in eval mode, so their running statistics stay as they were. With ``freeze_bn``
(by default: when the backbone is pretrained) the unfrozen stages keep them in eval mode too: their
BatchNorm weights and biases train, their statistics stay the pretrained ones, so the features the
head learnt on do not shift when a stage starts training.

The optimizer already holds every parameter (frozen ones just get no gradient), so unfreezing
only flips ``requires_grad``. Lightning's ``BaseFinetuning`` is built around adding parameter
groups on unfreeze, and freezes BatchNorm by disabling running statistics; neither fits here.
With several devices (DDP) a policy that unfreezes later needs
``trainer.strategy=ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from timm.models._manipulate import MATCH_PREV_GROUP, flatten_modules, group_with_matcher
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.lr_scheduler import ReduceLROnPlateau

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One backbone stage: its parameters (with names) and its BatchNorm layers."""

    names: list[str] = field(default_factory=list)
    parameters: list[nn.Parameter] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)

    def set_trainable(self, trainable: bool, training: bool = True) -> None:
        """Flip ``requires_grad``; frozen BatchNorm layers go to eval mode, unfrozen ones follow ``training``."""
        for p in self.parameters:
            p.requires_grad_(trainable)
        for norm in self.norms:
            norm.train(training and trainable)


def _stage_matcher(backbone: nn.Module):
    """timm's coarse group matcher (unmatched names join the previous group), or one per Sequential child."""
    group_matcher = getattr(backbone, "group_matcher", None)
    if callable(group_matcher):
        try:
            spec = group_matcher(coarse=True)
        except NotImplementedError:
            spec = None
        if isinstance(spec, dict):
            # timm sends unmatched names (e.g. densenet's norm5, convnext's head.norm) to a group
            # of their own after the last stage; MATCH_PREV_GROUP merges them into that stage
            return {**spec, "_unmatched": [(r".*", MATCH_PREV_GROUP)]}
        if spec is not None:
            return spec
    prefixes = [name for name, _ in flatten_modules(backbone.named_children(), depth=1)]

    def ordinal(name: str) -> int:
        # -1: parameters of the backbone itself (no child) go with the input end
        return next(
            (i for i, p in enumerate(prefixes) if name == p or name.startswith(p + ".")), -1
        )

    return ordinal


def backbone_stages(backbone: nn.Module) -> list[Stage]:
    """The backbone's stages from input to output; every parameter is in exactly one."""
    named: list[tuple[str, Any]] = list(backbone.named_parameters())
    named += [(n, m) for n, m in backbone.named_modules() if isinstance(m, _BatchNorm)]
    objects = dict(named)
    groups = group_with_matcher(iter(named), _stage_matcher(backbone))
    stages = []
    for _, names in sorted(groups.items()):
        stage = Stage()
        for name in names:
            obj = objects[name]
            if isinstance(obj, nn.Parameter):
                stage.names.append(name)
                stage.parameters.append(obj)
            else:
                stage.norms.append(obj)
        if stage.parameters or stage.norms:
            stages.append(stage)
    return stages


def _nested_schedulers(scheduler: Any) -> list[Any]:
    """A scheduler and those it wraps (``SequentialLR``, ``ChainedScheduler``)."""
    out = [scheduler]
    for inner in getattr(scheduler, "_schedulers", None) or []:
        out += _nested_schedulers(inner)
    return out


def scale_learning_rates(trainer: L.Trainer, factor: float) -> None:
    """Multiply every learning rate by ``factor``, in the optimizers and in the schedulers' bases."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
    for config in trainer.lr_scheduler_configs:
        for scheduler in _nested_schedulers(config.scheduler):
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
            if hasattr(scheduler, "_last_lr") and hasattr(scheduler, "optimizer"):
                scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def restart_patience(trainer: L.Trainer) -> None:
    """Restart early stopping's and ReduceLROnPlateau's counting: no bad epoch yet, no best value yet.

    Checkpoint callbacks keep their best (the best model is chosen over the whole run).
    """
    for callback in trainer.early_stopping_callbacks:
        callback.wait_count = 0
        worst = torch.inf if callback.monitor_op == torch.lt else -torch.inf
        callback.best_score = torch.tensor(worst)
    for config in trainer.lr_scheduler_configs:
        for scheduler in _nested_schedulers(config.scheduler):
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler._reset()  # torch's own: best, num_bad_epochs and cooldown


def resolve_freeze_bn(freeze_bn: bool | str, pretrained: bool | None) -> bool:
    """``freeze_bn`` as a bool: ``auto`` means frozen for a pretrained backbone."""
    if freeze_bn == "auto":
        return bool(pretrained)
    if isinstance(freeze_bn, bool):
        return freeze_bn
    raise ValueError(f"finetune.policy.freeze_bn={freeze_bn!r} must be true, false or auto")


class StageUnfreezing(L.Callback):
    """Base policy: the head always trains; the backbone trains its top ``trainable_stages(epoch)`` stages.

    ``freeze_bn`` (true, false or ``auto``: true when ``pretrained``) keeps every backbone
    BatchNorm layer in eval mode, the unfrozen stages' too.
    """

    def __init__(self, freeze_bn: bool | str = "auto", pretrained: bool | None = None) -> None:
        self.freeze_bn = resolve_freeze_bn(freeze_bn, pretrained)
        self.stages: list[Stage] = []
        self._frozen_norms: list[nn.Module] = []
        self._trainable: int | None = -1  # what the last epoch used; -1: not applied yet

    def trainable_stages(self, epoch: int) -> int | None:
        """How many backbone stages, counted from the top, train in ``epoch`` (None: all)."""
        raise NotImplementedError

    def _apply(self, pl_module: L.LightningModule, epoch: int) -> None:
        wanted = self.trainable_stages(epoch)
        n = len(self.stages) if wanted is None or wanted < 0 else min(wanted, len(self.stages))
        first = len(self.stages) - n
        training = pl_module.training and not self.freeze_bn
        for i, stage in enumerate(self.stages):
            stage.set_trainable(i >= first, training)
        still = self.stages if self.freeze_bn else self.stages[:first]
        self._frozen_norms = [m for s in still for m in s.norms]
        if n != self._trainable:
            which = f"stages {first}-{len(self.stages) - 1}" if n else "no stage"
            log.info(
                "%s, epoch %d: head + %s of %d backbone stages train%s",
                type(self).__name__,
                epoch,
                which,
                len(self.stages),
                " (BatchNorm statistics frozen)" if n and self.freeze_bn else "",
            )
            self._trainable = n

    @staticmethod
    def _backbone(pl_module: L.LightningModule) -> nn.Module:
        model = getattr(pl_module, "model", None)
        backbone = getattr(model, "backbone", None)
        if backbone is None or getattr(model, "head", None) is None:
            raise ValueError(
                "a finetune policy needs a model with .backbone and .head "
                "(medsweep.models.Classifier); use finetune=full for other models"
            )
        return backbone

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._backbone(pl_module)  # fail before any training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the strategy has wrapped the model (so DDP sees every parameter) and after a
        # checkpoint is restored
        self.stages = backbone_stages(self._backbone(pl_module))
        self._apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(pl_module, trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # whatever called model.train() since (a hook, a user), frozen statistics stay frozen
        for norm in self._frozen_norms:
            if norm.training:
                norm.eval()


class FrozenBackbone(StageUnfreezing):
    """Only the head trains, in every epoch (linear probing)."""

    def trainable_stages(self, epoch: int) -> int | None:
        return 0


class TwoPhaseUnfreezing(StageUnfreezing):
    """The head alone for ``head_epochs`` epochs, then also the last ``unfreeze_stages`` stages.

    At the switch every learning rate (head and backbone groups, and the schedulers' bases) is
    multiplied by ``lr_factor``, and early stopping and ReduceLROnPlateau start counting afresh
    (``restart_patience``), so the second phase gets their full patience; the best checkpoint
    is still the best of the whole run. ``unfreeze_stages`` of -1 or None unfreezes the whole
    backbone.
    """

    def __init__(
        self,
        head_epochs: int = 5,
        unfreeze_stages: int | None = -1,
        lr_factor: float = 0.1,
        freeze_bn: bool | str = "auto",
        pretrained: bool | None = None,
    ):
        super().__init__(freeze_bn, pretrained)
        if head_epochs < 0:
            raise ValueError(f"finetune.policy.head_epochs={head_epochs} must be >= 0")
        if unfreeze_stages is not None and unfreeze_stages != -1 and unfreeze_stages < 1:
            raise ValueError(
                f"finetune.policy.unfreeze_stages={unfreeze_stages} must be >= 1, or -1/null "
                "for all stages (finetune=frozen trains the head only)"
            )
        if lr_factor <= 0:
            raise ValueError(f"finetune.policy.lr_factor={lr_factor} must be > 0")
        self.head_epochs = head_epochs
        self.unfreeze_stages = unfreeze_stages
        self.lr_factor = lr_factor
        self.lr_scaled = False
        self.patience_restarted = False

    def trainable_stages(self, epoch: int) -> int | None:
        return 0 if epoch < self.head_epochs else self.unfreeze_stages

    def _scale_once(self, trainer: L.Trainer, upcoming_epoch: int) -> None:
        if upcoming_epoch >= self.head_epochs and not self.lr_scaled:
            scale_learning_rates(trainer, self.lr_factor)
            self.lr_scaled = True
            log.info(
                "TwoPhaseUnfreezing: learning rates x%g from epoch %d",
                self.lr_factor,
                upcoming_epoch,
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._scale_once(trainer, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch's scheduler step is done: scaling now means every hook at the next epoch's
        # start (LearningRateMonitor, History) already sees the new rate, whatever the order
        self._scale_once(trainer, trainer.current_epoch + 1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._scale_once(trainer, trainer.current_epoch)  # resumed from a checkpoint saved earlier
        # here, not at the previous epoch's end: its early-stopping check and plateau step are done
        epoch = trainer.current_epoch
        if 0 < self.head_epochs <= epoch and not self.patience_restarted:
            restart_patience(trainer)
            self.patience_restarted = True
            log.info(
                "TwoPhaseUnfreezing: early stopping and plateau counting restart at epoch %d", epoch
            )

    def state_dict(self) -> dict[str, Any]:
        return {"lr_scaled": self.lr_scaled, "patience_restarted": self.patience_restarted}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lr_scaled = bool(state_dict.get("lr_scaled", False))
        # a checkpoint without the field: past the switch (rates scaled) counts as restarted
        self.patience_restarted = bool(state_dict.get("patience_restarted", self.lr_scaled))


class ProgressiveUnfreezing(StageUnfreezing):
    """The head alone first, then one more stage, from the top, every ``every_epochs`` epochs.

    ``max_stages`` caps how many stages end up training (None: the whole backbone).
    """

    def __init__(
        self,
        every_epochs: int = 2,
        max_stages: int | None = None,
        freeze_bn: bool | str = "auto",
        pretrained: bool | None = None,
    ):
        super().__init__(freeze_bn, pretrained)
        if every_epochs < 1:
            raise ValueError(f"finetune.policy.every_epochs={every_epochs} must be >= 1")
        if max_stages is not None and max_stages < 1:
            raise ValueError(f"finetune.policy.max_stages={max_stages} must be >= 1 or null")
        self.every_epochs = every_epochs
        self.max_stages = max_stages

    def trainable_stages(self, epoch: int) -> int | None:
        n = epoch // self.every_epochs
        return n if self.max_stages is None else min(n, self.max_stages)
