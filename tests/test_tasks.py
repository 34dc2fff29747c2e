"""Binary, multiclass and multilabel runs on real digits; the module's metrics equal scikit-learn's."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TASK_OVERRIDES, bare_trainer, compose, run
from sklearn import metrics as skm

from medsweep.pipeline import build_datamodule, build_model, build_module

TASKS = TASK_OVERRIDES
ONE_EPOCH = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
]


@pytest.mark.parametrize("task", list(TASKS))
def test_task_trains_an_epoch(task, tmp_path):
    record = run([*TASKS[task], *ONE_EPOCH], tmp_path)
    assert record["status"] == "ok" and record["task"] == task
    assert record["epochs_run"] == 1 and record["best_epoch"] == 0
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val/loss" in history[0] and "train/loss" in history[0]
    assert record["sizes"]["train"] + record["sizes"]["val"] + record["sizes"]["test"] == 1797
    if task == "multilabel":
        assert {"hamming_acc", "exact_match", "auroc/even", "auroc/prime"} <= set(record["val"])
    if task == "multiclass":
        assert len(record["confusion"]["val"]) == 10
        assert sum(map(sum, record["confusion"]["val"])) == record["sizes"]["val"]


def _predict(module, loader) -> tuple[np.ndarray, np.ndarray]:
    module.eval()
    probs, targets = [], []
    with torch.no_grad():
        from medsweep.module import probabilities

        for x, y in loader:
            probs.append(probabilities(module(x), module.task))
            targets.append(y)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


@pytest.mark.parametrize("task", list(TASKS))
def test_module_metrics_equal_sklearn(task, tmp_path):
    cfg = compose([*TASKS[task], *ONE_EPOCH], tmp_path)
    L.seed_everything(0)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, build_model(cfg, dm))
    trainer = bare_trainer(max_epochs=1, limit_train_batches=8)
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    ours = module.results["val"]["metrics"]
    probs, y = _predict(module, dm.val_dataloader())
    if task == "multiclass":
        pred = probs.argmax(1)
        expected = {
            "acc": skm.accuracy_score(y, pred),
            "balanced_acc": skm.balanced_accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
            "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
            "auroc": skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"),
            "auroc/3": skm.roc_auc_score(y == 3, probs[:, 3]),
        }
        assert np.array_equal(module.results["val"]["confusion"], skm.confusion_matrix(y, pred))
    elif task == "binary":
        pred = (probs > 0.5).astype(int)
        expected = {
            "acc": skm.accuracy_score(y, pred),
            "balanced_acc": skm.balanced_accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, zero_division=0),
            "recall": skm.recall_score(y, pred),
            "specificity": skm.recall_score(1 - y, 1 - pred),
            "f1": skm.f1_score(y, pred, zero_division=0),
            "auroc": skm.roc_auc_score(y, probs),
        }
    else:
        pred = (probs > 0.5).astype(int)
        expected = {
            "acc": (pred == y).mean(),
            "hamming_acc": 1 - skm.hamming_loss(y, pred),
            "exact_match": skm.accuracy_score(y, pred),
            "balanced_acc": np.mean(
                [skm.balanced_accuracy_score(y[:, k], pred[:, k]) for k in range(3)]
            ),
            "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
            "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
            "auroc": skm.roc_auc_score(y, probs, average="macro"),
            "auroc/prime": skm.roc_auc_score(y[:, 2], probs[:, 2]),
        }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-5), name
