"""The module's epoch metrics, computed once per epoch from the batches it kept: the recorded
train and validation metrics equal scikit-learn's on the same predictions, and the logged
losses are the batch-size-weighted means of the steps' losses."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TASK_OVERRIDES, bare_trainer, compose
from sklearn import metrics as skm

from medsweep.module import dense_targets
from medsweep.pipeline import build_datamodule, build_model, build_module

TASKS = TASK_OVERRIDES
SMALL = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=24",  # the last batch of each part is smaller: weighted means matter
    "trainer.max_epochs=2",
    "callbacks.progress_bar=null",
]


def sklearn_metrics(task: str, probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    if task == "multiclass":
        pred = probs.argmax(1)
        labels = list(range(len(classes)))
        out = {
            "acc": skm.accuracy_score(y, pred),
            "balanced_acc": skm.recall_score(
                y, pred, labels=labels, average="macro", zero_division=0
            ),
            "precision": skm.precision_score(
                y, pred, labels=labels, average="macro", zero_division=0
            ),
            "recall": skm.recall_score(y, pred, labels=labels, average="macro", zero_division=0),
            "f1": skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0),
            "auroc": skm.roc_auc_score(y, probs, multi_class="ovr", labels=labels),
        }
        out.update(
            {f"auroc/{c}": skm.roc_auc_score(y == k, probs[:, k]) for k, c in enumerate(classes)}
        )
        return out | {"confusion": skm.confusion_matrix(y, pred, labels=labels)}
    pred = (probs > 0.5).astype(int)
    if task == "binary":
        return {
            "acc": skm.accuracy_score(y, pred),
            "balanced_acc": skm.balanced_accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, zero_division=0),
            "recall": skm.recall_score(y, pred, zero_division=0),
            "specificity": skm.recall_score(1 - y, 1 - pred, zero_division=0),
            "f1": skm.f1_score(y, pred, zero_division=0),
            "auroc": skm.roc_auc_score(y, probs),
            "confusion": skm.confusion_matrix(y, pred, labels=[0, 1]),
        }
    k = y.shape[1]
    out = {
        "acc": (pred == y).mean(),
        "hamming_acc": 1 - skm.hamming_loss(y, pred),
        "exact_match": skm.accuracy_score(y, pred),
        "balanced_acc": np.mean(
            [skm.balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(k)]
        ),
        "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
        "auroc": skm.roc_auc_score(y, probs, average="macro"),
    }
    out.update(
        {f"auroc/{c}": skm.roc_auc_score(y[:, j], probs[:, j]) for j, c in enumerate(classes)}
    )
    return out | {"confusion": skm.multilabel_confusion_matrix(y, pred)}


class StepLosses(L.Callback):
    """The loss and batch size of every training and validation step, in order."""

    def __init__(self):
        self.steps: dict[str, list[tuple[torch.Tensor, int]]] = {"train": [], "val": []}

    def on_train_epoch_start(self, trainer, pl_module):
        self.steps = {"train": [], "val": []}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps["train"].append((outputs["loss"].detach(), len(batch[0])))

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        x, y = batch
        with torch.no_grad():  # the step's loss again, from the same weights in eval mode
            logits = pl_module(x).float()
            target = dense_targets(y, pl_module.task, pl_module.units)
            self.steps["val"].append((pl_module.loss_fn(logits, target), len(x)))


def weighted_mean(steps: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """A float32 running sum of loss * batch size over the summed batch sizes."""
    total, count = torch.tensor(0.0), torch.tensor(0)
    for loss, n in steps:
        total, count = total + loss * n, count + n
    return total / count


@pytest.mark.parametrize("task", list(TASKS))
def test_epoch_metrics_equal_sklearn_on_the_same_predictions(task, tmp_path):
    cfg = compose([*TASKS[task], *SMALL], tmp_path)
    L.seed_everything(0)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, build_model(cfg, dm))
    module.collect = {"train", "val"}  # keep the probabilities the metrics were computed from
    losses = StepLosses()
    trainer = bare_trainer(
        max_epochs=2, limit_train_batches=6, callbacks=[losses], deterministic=True
    )
    seen: dict[str, tuple] = {}

    class LastEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen["train"] = pl_module.take_collected("train")
            seen["val"] = pl_module.take_collected("val")

    trainer.callbacks.append(LastEpoch())
    trainer.fit(module, datamodule=dm)
    for stage in ("train", "val"):
        probs, y = (t.numpy() for t in seen[stage])
        assert len(probs) == (6 * 24 if stage == "train" else len(dm.datasets["val"]))
        expected = sklearn_metrics(task, probs, y, module.classes)
        confusion = expected.pop("confusion")
        ours = module.results[stage]["metrics"]
        assert set(expected) <= set(ours)
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, abs=1e-5), (stage, name)
        assert np.array_equal(np.asarray(module.results[stage]["confusion"]), confusion)
        logged = trainer.callback_metrics[f"{stage}/loss"]
        if stage == "train":  # the training steps' own losses, exactly
            assert torch.equal(logged, weighted_mean(losses.steps["train"]))
        else:  # the loss recomputed after the epoch from the same weights
            assert float(logged) == pytest.approx(
                float(weighted_mean(losses.steps["val"])), rel=1e-6
            )


def test_a_stage_cut_short_leaves_nothing_for_the_next_epoch(tmp_path):
    cfg = compose([*TASKS["binary"], *SMALL], tmp_path)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, build_model(cfg, dm))
    x, y = next(iter(dm.train_dataloader()))
    module._step((x, y), "val")  # a validation epoch that never reached its end
    module.on_validation_epoch_start()
    assert "val" not in module._batches and "val" not in module._loss_sums
