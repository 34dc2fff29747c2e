"""Fine-tuning policies on real timm backbones and a real Lightning Trainer."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsweep.models import pixel_mlp, small_cnn, timm_classifier
from medsweep.models.finetune import (
    FrozenBackbone,
    ProgressiveUnfreezing,
    TwoPhaseUnfreezing,
    backbone_stages,
)
from medsweep.module import ClassificationModule
from medsweep.schedulers import warmup_cosine

TIMM = ["resnet18", "efficientnet_b0", "densenet121", "convnext_tiny", "vit_tiny_patch16_224"]
# stem + one group per stage (efficientnet: per block group; vit: per block)
STAGE_COUNTS = {
    "resnet18": 5,
    "efficientnet_b0": 8,
    "densenet121": 5,
    "convnext_tiny": 5,
    "vit_tiny_patch16_224": 13,
    "small_cnn": 3,
    "mlp": 2,
}
# timm's own tiny ResNet (stem + layer1-4, BatchNorm throughout) for the multi-epoch tests
TINY = "test_resnet"


def classifier(name: str) -> nn.Module:
    if name == "small_cnn":
        return small_cnn(3, in_chans=1)
    if name == "mlp":
        return pixel_mlp(3, in_chans=1, image_size=32)
    extra = {"img_size": 32} if name.startswith("vit") else {}
    return timm_classifier(name, num_classes=3, in_chans=1, **extra)


def loader(n: int = 8, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 32, 32, generator=g)
    return DataLoader(TensorDataset(x, torch.arange(n) % 3), batch_size=batch)


def module(
    model: nn.Module, lr: float = 1e-2, scale: float = 1.0, scheduler=None, monitor=None
) -> ClassificationModule:
    return ClassificationModule(
        model,
        nn.CrossEntropyLoss(),
        partial(torch.optim.Adam, lr=lr),
        "multiclass",
        ["a", "b", "c"],
        scheduler=scheduler,
        scheduler_monitor=monitor,
        backbone_lr_scale=scale,
    )


def fit(
    pl_module: ClassificationModule,
    callbacks: list,
    epochs: int = 1,
    batches: int = 2,
    validate: bool = False,
    ckpt_path: str | None = None,
) -> L.Trainer:
    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=1 if validate else 0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=checkpoints,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(
        pl_module,
        train_dataloaders=loader(),
        val_dataloaders=loader() if validate else None,
        ckpt_path=ckpt_path,
    )
    return trainer


def state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class EpochRecord(L.Callback):
    """Per epoch: which backbone stages changed, whether the head did, and the optimizer's lrs."""

    def __init__(self) -> None:
        self.changed: list[list[bool]] = []
        self.head_changed: list[bool] = []
        self.lrs: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._before = [
            [p.detach().clone() for p in s.parameters]
            for s in backbone_stages(pl_module.model.backbone)
        ]
        self._head = [p.detach().clone() for p in pl_module.model.head.parameters()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        stages = backbone_stages(pl_module.model.backbone)
        self.changed.append(
            [
                any(not torch.equal(a, p) for a, p in zip(before, s.parameters, strict=True))
                for before, s in zip(self._before, stages, strict=True)
            ]
        )
        self.head_changed.append(
            any(
                not torch.equal(a, p)
                for a, p in zip(self._head, pl_module.model.head.parameters(), strict=True)
            )
        )
        self.lrs.append(self._lrs)


class CallsTrain(L.Callback):
    """Puts the whole model back in train mode at every epoch start, as a user hook might."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pl_module.train()


@pytest.mark.parametrize("name", [*TIMM, "small_cnn", "mlp"])
def test_stages_partition_the_backbone_in_order(name):
    backbone = classifier(name).backbone
    stages = backbone_stages(backbone)
    assert len(stages) == STAGE_COUNTS[name]
    ids = [id(p) for s in stages for p in s.parameters]
    assert sorted(ids) == sorted(id(p) for p in backbone.parameters())  # each exactly once
    names = [n for n, _ in backbone.named_parameters()]
    assert names[0] in stages[0].names and names[-1] in stages[-1].names
    bn = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert sorted(map(id, bn)) == sorted(id(m) for s in stages for m in s.norms)


@pytest.mark.parametrize("name", TIMM)
def test_frozen_trains_only_the_head(name):
    torch.manual_seed(0)
    model = classifier(name)
    backbone_before, head_before = state(model.backbone), state(model.head)
    fit(module(model), [FrozenBackbone()])
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in backbone_before.items())  # BN buffers included
    assert not any(p.requires_grad for p in model.backbone.parameters())
    head_after = model.head.state_dict()
    assert any(not torch.equal(v, head_after[k]) for k, v in head_before.items())


def test_frozen_batchnorm_stays_in_eval_after_model_train():
    torch.manual_seed(0)
    model = classifier(TINY)
    before = state(model.backbone)
    fit(module(model), [FrozenBackbone(), CallsTrain()], epochs=2, validate=True)
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_two_phase_unfreezes_last_stages_with_scaled_lr():
    scale = (
        0.1  # backbone_lr_scale: the backbone group keeps its ratio to the head through the switch
    )
    torch.manual_seed(0)
    model = classifier(TINY)
    bn_before = {
        k: v.clone() for k, v in model.backbone.state_dict().items() if "running_mean" in k
    }
    sched = partial(warmup_cosine, max_epochs=4, warmup_epochs=1, restart_epochs=2)
    record = EpochRecord()
    policy = TwoPhaseUnfreezing(head_epochs=2, unfreeze_stages=2, lr_factor=0.1)
    trainer = fit(
        module(model, lr=1e-2, scale=scale, scheduler=sched), [policy, record], epochs=4, batches=1
    )

    # stages: stem, layer1, layer2, layer3, layer4; the last two join at epoch 2
    assert record.changed == [[False] * 5] * 2 + [[False, False, False, True, True]] * 2
    assert all(record.head_changed)
    bn_after = model.backbone.state_dict()
    for k, v in bn_before.items():
        assert torch.equal(v, bn_after[k]) == (not k.startswith(("layer3", "layer4"))), k

    # the same schedule on a bare optimizer, times lr_factor from epoch 2 on
    groups = [1e-2 * scale, 1e-2]
    bare = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in groups])
    reference = sched(bare)
    expected = []
    for epoch in range(5):
        expected.append([lr * (0.1 if epoch >= 2 else 1.0) for lr in reference.get_last_lr()])
        reference.step()
    # head: 1e-3 (warmup), 1e-2, 5e-4 (cosine half-way, x0.1), 1e-3 (restart, x0.1); backbone x0.1
    assert [lr for epoch in record.lrs for lr in epoch] == pytest.approx(
        sum(expected[:4], []), rel=1e-9
    )
    # read back from the optimizer after fit: the scheduler has stepped once more, still scaled
    after_fit = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert after_fit == pytest.approx(expected[4], rel=1e-9)
    assert policy.lr_scaled


def test_two_phase_all_stages_and_no_scheduler():
    torch.manual_seed(0)
    record = EpochRecord()
    fit(
        module(classifier("small_cnn"), lr=1e-2),
        [TwoPhaseUnfreezing(head_epochs=1, lr_factor=0.5), record],
        epochs=2,
        batches=1,
    )
    assert record.changed == [[False] * 3, [True] * 3]
    assert record.lrs == [[1e-2], [5e-3]]


def test_progressive_adds_one_stage_every_every_epochs():
    torch.manual_seed(0)
    record = EpochRecord()
    policy = ProgressiveUnfreezing(every_epochs=2)
    fit(module(classifier(TINY)), [policy, record], epochs=5, batches=1)
    tops = [sum(c) for c in record.changed]
    assert tops == [0, 0, 1, 1, 2]
    for changed, n in zip(record.changed, tops, strict=True):
        assert changed == [False] * (5 - n) + [True] * n  # always the top n stages
    assert [ProgressiveUnfreezing(1, max_stages=2).trainable_stages(e) for e in range(4)] == [
        0,
        1,
        2,
        2,
    ]


def test_backbone_lr_scale_sets_group_learning_rates():
    trainer = fit(module(classifier(TINY), lr=1e-4, scale=0.1), [], batches=1)
    groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert groups == pytest.approx({"backbone": 1e-5, "head": 1e-4})


@pytest.mark.parametrize(
    ("policy", "kwargs"),
    [
        (TwoPhaseUnfreezing, {"unfreeze_stages": 0}),
        (TwoPhaseUnfreezing, {"lr_factor": 0.0}),
        (TwoPhaseUnfreezing, {"head_epochs": -1}),
        (ProgressiveUnfreezing, {"every_epochs": 0}),
        (TwoPhaseUnfreezing, {"freeze_bn": "yes"}),
        (ProgressiveUnfreezing, {"freeze_bn": None}),
    ],
)
def test_invalid_policy_fields_fail_early(policy, kwargs):
    with pytest.raises(ValueError, match="finetune.policy"):
        policy(**kwargs)


def test_policy_needs_a_backbone_and_head():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3))
    with pytest.raises(ValueError, match="finetune=full"):
        fit(module(plain), [FrozenBackbone()], batches=1)


def batchnorm_statistics(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in backbone.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def bn_weights(backbone: nn.Module) -> dict[str, torch.Tensor]:
    norms = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return {n: m.weight.detach().clone() for n, m in norms}


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_two_phase_freeze_bn_keeps_backbone_statistics(freeze_bn):
    torch.manual_seed(0)
    model = classifier(TINY)
    before, weights = batchnorm_statistics(model.backbone), bn_weights(model.backbone)
    record = EpochRecord()
    policy = TwoPhaseUnfreezing(head_epochs=1, lr_factor=1.0, freeze_bn=freeze_bn)
    fit(module(model), [policy, record, CallsTrain()], epochs=3, batches=2, validate=True)
    after = batchnorm_statistics(model.backbone)
    assert before and before.keys() == after.keys()
    same = [k for k in before if torch.equal(before[k], after[k])]
    # every stage trains in phase 2 (BatchNorm weights and biases included) ...
    assert record.changed == [[False] * 5, [True] * 5, [True] * 5]
    assert all(not torch.equal(weights[k], v) for k, v in bn_weights(model.backbone).items())
    # ... while the running statistics stay bit-identical only with freeze_bn
    assert same == (list(before) if freeze_bn else [])


def test_freeze_bn_auto_follows_pretrained():
    assert TwoPhaseUnfreezing(pretrained=True).freeze_bn is True
    assert TwoPhaseUnfreezing(pretrained=False).freeze_bn is False
    assert TwoPhaseUnfreezing().freeze_bn is False  # no pretrained weights known
    assert TwoPhaseUnfreezing(freeze_bn=False, pretrained=True).freeze_bn is False
    assert ProgressiveUnfreezing(freeze_bn="auto", pretrained=True).freeze_bn is True
    assert ProgressiveUnfreezing(freeze_bn=True, pretrained=False).freeze_bn is True


def test_progressive_freeze_bn_keeps_statistics_of_unfrozen_stages():
    torch.manual_seed(0)
    model = classifier("small_cnn")
    before = batchnorm_statistics(model.backbone)
    record = EpochRecord()
    fit(module(model), [ProgressiveUnfreezing(1, freeze_bn=True), record], epochs=3, batches=1)
    assert record.changed == [[False] * 3, [False, False, True], [False, True, True]]
    after = batchnorm_statistics(model.backbone)
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize(
    ("overrides", "freeze_bn"),
    [
        (["model=efficientnet_lite0"], True),  # pretrained: true
        (["model=resnet18"], False),  # pretrained: false
        (["model=small_cnn"], False),  # no pretrained field
        (["model=efficientnet_lite0", "finetune.policy.freeze_bn=false"], False),
        (["model=resnet18", "finetune.policy.freeze_bn=true"], True),
    ],
)
def test_build_trainer_resolves_freeze_bn_from_the_model_config(overrides, freeze_bn, tmp_path):
    from helpers import compose

    from medsweep.pipeline import build_trainer

    cfg = compose(["finetune=two_phase", *overrides], tmp_path)
    trainer = build_trainer(cfg, tmp_path, [])
    (policy,) = [c for c in trainer.callbacks if isinstance(c, TwoPhaseUnfreezing)]
    assert policy.freeze_bn is freeze_bn


class Declining(L.Callback):
    """Logs ``val/score`` = 1 - epoch / 100: nothing improves after epoch 0."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("val/score", 1.0 - trainer.current_epoch / 100)


class Counters(L.Callback):
    """Early stopping's and the plateau scheduler's counters, per epoch: ``pre`` at the epoch's
    start (placed before the policy: before any restart), ``post`` at its first batch."""

    def __init__(self) -> None:
        self.pre: dict[int, dict[str, float]] = {}
        self.post: dict[int, dict[str, float]] = {}

    @staticmethod
    def _read(trainer) -> dict[str, float]:
        out = {}
        for es in trainer.early_stopping_callbacks:
            out.update(wait=es.wait_count, best=float(es.best_score))
        for config in trainer.lr_scheduler_configs:
            out.update(bad=config.scheduler.num_bad_epochs, plateau_best=config.scheduler.best)
        return out

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.pre[trainer.current_epoch] = self._read(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.post[trainer.current_epoch] = self._read(trainer)


def stopping_run(policy, tmp_path, epochs=10, ckpt_path=None):
    counters = Counters()
    es = EarlyStopping("val/score", mode="max", patience=3)
    best = ModelCheckpoint(tmp_path, "best", monitor="val/score", mode="max", save_last=True)
    model = module(classifier("small_cnn"))
    trainer = fit(
        model,
        [counters, policy, Declining(), es, best],
        epochs=epochs,
        batches=1,
        validate=True,
        ckpt_path=ckpt_path,
    )
    return trainer, counters, best


def test_two_phase_restarts_early_stopping_at_the_switch(tmp_path):
    torch.manual_seed(0)
    policy = TwoPhaseUnfreezing(head_epochs=2, lr_factor=1.0)
    trainer, counters, best = stopping_run(policy, tmp_path / "two_phase")
    # head-only: the best is epoch 0, then one bad epoch; after the switch: none, and no best
    assert counters.pre[2] == {"wait": 1, "best": 1.0}
    assert counters.post[2] == {"wait": 0, "best": float("-inf")}
    # patience 3 counted from the switch: best at epoch 2, stop after 3 more (epochs 3, 4, 5)
    assert trainer.current_epoch == 6 and trainer.current_epoch >= 2 + 3
    # the checkpoint's best is still the best of the whole run (epoch 0)
    assert best.best_model_score.item() == pytest.approx(1.0)
    ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0

    # without a restart the same metric stops the run 2 epochs earlier (patience from epoch 0)
    torch.manual_seed(0)
    control, _, _ = stopping_run(FrozenBackbone(), tmp_path / "control")
    assert control.current_epoch == 4


def test_two_phase_restart_survives_a_resume(tmp_path):
    torch.manual_seed(0)
    # stopped at the last head-only epoch: the restart has not happened yet
    _, _, first = stopping_run(TwoPhaseUnfreezing(head_epochs=2, lr_factor=0.5), tmp_path, 2)
    last = tmp_path / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if "TwoPhaseUnfreezing" in k]
    assert state == {"lr_scaled": False, "patience_restarted": False}
    resumed, counters, _ = stopping_run(
        TwoPhaseUnfreezing(head_epochs=2, lr_factor=0.5), tmp_path, ckpt_path=str(last)
    )
    assert counters.pre[2]["wait"] == 1 and counters.post[2]["wait"] == 0
    assert resumed.current_epoch == 6
    assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(5e-3)  # scaled once

    # resumed after the switch: the counters come from the checkpoint, not restarted again
    second = tmp_path / "after"
    stopping_run(TwoPhaseUnfreezing(head_epochs=2, lr_factor=0.5), second, 4)
    resumed, counters, _ = stopping_run(
        TwoPhaseUnfreezing(head_epochs=2, lr_factor=0.5),
        second,
        ckpt_path=str(second / "last.ckpt"),
    )
    assert counters.post[4]["wait"] == 1 and counters.post[4]["best"] == pytest.approx(0.98)
    assert resumed.current_epoch == 6
    assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(5e-3)


def test_two_phase_restarts_the_plateau_scheduler(tmp_path):
    plateau = partial(
        torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", factor=0.5, patience=1
    )

    def lrs(policy) -> tuple[list[float], Counters]:
        torch.manual_seed(0)
        record, counters = EpochRecord(), Counters()
        model = module(classifier("small_cnn"), scheduler=plateau, monitor="val/score")
        fit(model, [counters, policy, Declining(), record], epochs=6, batches=1, validate=True)
        return [lr for (lr,) in record.lrs], counters

    restarted, counters = lrs(TwoPhaseUnfreezing(head_epochs=2, lr_factor=1.0))
    assert counters.pre[2] == {"bad": 1, "plateau_best": 1.0}
    assert counters.post[2] == {"bad": 0, "plateau_best": float("-inf")}
    # best at epoch 2, bad epochs 3 and 4 (> patience 1): halved from epoch 5
    assert restarted == pytest.approx([1e-2] * 5 + [5e-3])
    # counting from epoch 0 instead: halved from epoch 3, again from epoch 5
    plain, _ = lrs(FrozenBackbone())
    assert plain == pytest.approx([1e-2] * 3 + [5e-3] * 2 + [2.5e-3])
