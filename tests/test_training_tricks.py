"""Training tricks as config fields: EMA of weights, cosine warm restarts, and all of them together."""

from __future__ import annotations

import csv
import json
import math
from functools import partial

import lightning as L
import pytest
import torch
from helpers import FAST, compose, run
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsweep.models import small_cnn
from medsweep.models.ema import EMA
from medsweep.module import ClassificationModule

# real epochs instead of fast_dev_run, so checkpoints are written
SHORT = [o for o in FAST if o != "trainer=debug"] + [
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
]


def backbone_tensors(state: dict) -> dict[str, torch.Tensor]:
    return {
        k: v for k, v in state.items() if k.startswith("model.backbone.") and v.is_floating_point()
    }


class SeenWeights(L.Callback):
    """The backbone weights each evaluation actually ran with."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, torch.Tensor]] = {}

    def _keep(self, stage: str, pl_module: L.LightningModule) -> None:
        self.seen[stage] = {
            k: v.clone() for k, v in backbone_tensors(pl_module.state_dict()).items()
        }

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._keep("fit_val" if trainer.state.fn == "fit" else "val", pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep("test", pl_module)


def test_ema_weights_are_validated_checkpointed_and_tested(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 16, 16)
    loader = DataLoader(TensorDataset(x, torch.arange(16) % 3), batch_size=4)
    module = ClassificationModule(
        small_cnn(3, widths=(8, 16)),
        nn.CrossEntropyLoss(),
        partial(torch.optim.SGD, lr=0.5),
        "multiclass",
        ["a", "b", "c"],
    )
    seen = SeenWeights()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val/loss", save_top_k=1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[EMA(decay=0.5), seen, checkpoint],
    )
    trainer.fit(module, loader, loader)
    raw_during_fit = backbone_tensors(module.state_dict())
    ckpt = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    stored = backbone_tensors(ckpt["state_dict"])
    # after fit the model holds the average (the last epoch's), not the raw weights
    assert any(
        not torch.equal(stored[k], backbone_tensors(ckpt["current_model_state"])[k]) for k in stored
    )

    # evaluating the best checkpoint after fit runs exactly its averaged weights, val and test alike
    trainer.validate(module, loader, ckpt_path=checkpoint.best_model_path, verbose=False)
    trainer.test(module, loader, ckpt_path=checkpoint.best_model_path, verbose=False)
    for stage in ("val", "test"):
        assert all(torch.equal(seen.seen[stage][k], stored[k]) for k in stored), stage
    assert raw_during_fit.keys() == stored.keys()


def test_ema_should_update_schedule():
    ema = EMA(decay=0.9, every_n_steps=2, start_step=3)
    assert [s for s in range(10) if ema.should_update(step_idx=s)] == [3, 5, 7, 9]
    assert not ema.should_update(epoch_idx=0)
    with pytest.raises(ValueError, match="callbacks.ema.decay"):
        EMA(decay=1.5)


def test_cosine_restarts_lr_restarts_where_expected(tmp_path):
    cfg = compose(
        [
            "scheduler=cosine_restarts",
            "trainer.max_epochs=12",
            "scheduler.scheduler.restart_epochs=3",
            "scheduler.scheduler.restart_mult=2",
        ],
        tmp_path,
    )
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = instantiate(cfg.scheduler.scheduler)(optimizer)
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # epoch 0: warmup from 0.1; cycles of 3 and 6 epochs start at epochs 1, 4 and 10
    expected = [0.1]
    for start, length in ((1, 3), (4, 6), (10, 12)):
        expected += [0.5 * (1 + math.cos(math.pi * k / length)) for k in range(length)][
            : 12 - start
        ]
    assert lrs == pytest.approx(expected[:12], abs=1e-9)
    restarts = [e for e in range(1, 12) if lrs[e] > lrs[e - 1]]
    assert restarts == [1, 4, 10]


def test_tricks_combine_in_one_run(tmp_path):
    overrides = [
        *SHORT,
        "model=resnet18",
        "model.name=test_resnet",  # timm's tiny ResNet
        "data.batch_size=8",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=4",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
        "callbacks=ema",
        "callbacks.ema.decay=0.9",
        "callbacks.early_stopping=null",
        "scheduler=cosine_restarts",
        "scheduler.scheduler.restart_epochs=2",
        "finetune=two_phase",
        "finetune.policy.head_epochs=1",
        "finetune.policy.unfreeze_stages=2",
        "finetune.policy.lr_factor=0.1",
        "finetune.backbone_lr_scale=0.1",
        "model.drop_rate=0.2",
        "model.drop_path_rate=0.1",
        "model.head_dropout=0.1",
        "optimizer=adamw",
        "optimizer.weight_decay=0.05",
        "optimizer.lr=0.01",
    ]
    record = run(overrides, tmp_path)
    assert record["status"] == "ok" and record["epochs_run"] == 3
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        saved["status"] == "ok" and 0.0 <= saved["val"]["acc"] <= 1.0 and "auroc" in saved["test"]
    )

    # the learning rates LearningRateMonitor logged at each epoch start: warmup (x0.1), then a
    # 2-epoch cosine cycle; x0.1 from the unfreezing (epoch 1) on; the backbone x0.1 again
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW/head")]
    assert [float(r["lr-AdamW/head"]) for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert [float(r["lr-AdamW/backbone"]) for r in rows] == pytest.approx([1e-4, 1e-4, 5e-5])

    # the checkpoint stores the weight average; the raw weights ride along
    best = torch.load(
        tmp_path / saved["paths"]["checkpoint"], map_location="cpu", weights_only=False
    )
    ema, raw = backbone_tensors(best["state_dict"]), backbone_tensors(best["current_model_state"])
    assert ema.keys() == raw.keys() and ema
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    # 4 batches / accumulate 2: two optimizer steps (and averages) per epoch
    assert int(best["averaging_state"]["n_averaged"]) == 2 * (best["epoch"] + 1)
    stem = [k for k in ema if k.startswith("model.backbone.conv1.")]  # frozen throughout
    assert stem and all(torch.equal(ema[k], raw[k]) for k in stem)
