"""Fine-tuning policies on real timm backbones and a real Lightning Trainer."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
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
    model: nn.Module, lr: float = 1e-2, scale: float = 1.0, scheduler=None
) -> ClassificationModule:
    return ClassificationModule(
        model,
        nn.CrossEntropyLoss(),
        partial(torch.optim.Adam, lr=lr),
        "multiclass",
        ["a", "b", "c"],
        scheduler=scheduler,
        backbone_lr_scale=scale,
    )


def fit(
    pl_module: ClassificationModule,
    callbacks: list,
    epochs: int = 1,
    batches: int = 2,
    validate: bool = False,
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=1 if validate else 0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(
        pl_module, train_dataloaders=loader(), val_dataloaders=loader() if validate else None
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
    ],
)
def test_invalid_policy_fields_fail_early(policy, kwargs):
    with pytest.raises(ValueError, match="finetune.policy"):
        policy(**kwargs)


def test_policy_needs_a_backbone_and_head():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3))
    with pytest.raises(ValueError, match="finetune=full"):
        fit(module(plain), [FrozenBackbone()], batches=1)
