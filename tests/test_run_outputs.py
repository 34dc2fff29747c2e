"""What a run leaves behind: metrics.json schema, determinism, resume, failure record, W&B offline."""

from __future__ import annotations

import json

import pytest
from helpers import FAST, compose, run, wandb_logged_values

from medsweep.pipeline import train

TWO_EPOCHS = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=64",
    "trainer.max_epochs=2",
    "callbacks.progress_bar=null",
    "+trainer.limit_train_batches=4",
]


def test_metrics_json_schema(tmp_path):
    record = run([*TWO_EPOCHS, "loss=focal"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(saved))  # plain JSON, no NaN
    for key in (
        "status",
        "overrides",
        "config_key",
        "task",
        "classes",
        "fold",
        "n_folds",
        "seed",
        "best_epoch",
        "monitor",
        "val",
        "test",
        "timing",
        "paths",
        "sizes",
        "versions",
    ):
        assert key in saved, key
    assert saved["overrides"]["loss"] == "focal"
    assert "loss=focal" in saved["config_key"]
    assert saved["classes"] == [str(i) for i in range(10)]
    assert saved["timing"]["fit_s"] > 0 and saved["timing"]["train_img_per_s"] > 0
    assert (tmp_path / saved["paths"]["checkpoint"]).exists()
    assert (tmp_path / saved["paths"]["splits"]).exists()
    assert saved["best_epoch"] in (0, 1) and saved["epochs_run"] == 2
    assert record["val"] == saved["val"]
    assert not list(tmp_path.glob(".metrics.json*"))  # the temporary file was renamed away


def test_same_seed_same_metrics(tmp_path):
    overrides = [*TWO_EPOCHS, "augmentation=basic", "seed=7"]
    first = run(overrides, tmp_path / "a")
    second = run(overrides, tmp_path / "b")
    assert first["val"] == second["val"]
    assert first["test"] == second["test"]
    third = run([*TWO_EPOCHS, "augmentation=basic", "seed=8"], tmp_path / "c")
    assert third["val"] != first["val"]


def test_resume_from_last_checkpoint(tmp_path):
    run([*TWO_EPOCHS, "trainer.max_epochs=1"], tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert last.exists()
    record = run([*TWO_EPOCHS, "trainer.max_epochs=2", f"resume={last}"], tmp_path / "second")
    assert record["epochs_run"] == 2
    history = (tmp_path / "second" / "history.csv").read_text().splitlines()
    first = (tmp_path / "first" / "history.csv").read_text().splitlines()
    # epoch 0 came with the checkpoint: the resumed run's history covers the whole run
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    assert history[1] == first[1]


def test_failed_run_records_error_and_reraises(tmp_path):
    cfg = compose([*FAST, "optimizer.lr=-1"], tmp_path)
    with pytest.raises(Exception, match="Invalid learning rate"):
        train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed"
    assert "Invalid learning rate" in saved["error"]
    assert saved["overrides"]["optimizer.lr"] == -1


def test_wandb_offline_run_holds_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    record = run(
        [*TWO_EPOCHS, "trainer.max_epochs=1", "logger=wandb", "logger.wandb.project=mstest"],
        tmp_path,
    )
    assert record["wandb"]["mode"] == "offline"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = wandb_logged_values(next(runs[0].glob("*.wandb")))
    assert logged["val/acc"][-1] == pytest.approx(record["val"]["acc"])  # the best-checkpoint value
    assert "train/loss" in logged and "val/auroc" in logged
    assert (tmp_path / "csv" / "metrics.csv").exists()  # CSV is always on


def test_last_checkpoint_follows_the_latest_epoch(tmp_path):
    import torch

    # lr=0 and no BatchNorm: the monitored metric never improves after epoch 0; last.ckpt moves on
    run([*TWO_EPOCHS, "trainer.max_epochs=3", "optimizer.lr=0.0", "model=mlp"], tmp_path)  # no BN
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert best["epoch"] == 0 and last["epoch"] == 2


def test_history_lr_is_the_rate_each_epoch_trained_with(tmp_path):
    run(
        [
            *TWO_EPOCHS,
            "trainer.max_epochs=3",
            "scheduler=step",
            "scheduler.scheduler.step_size=1",
            "scheduler.scheduler.gamma=0.5",
            "callbacks=no_early_stopping",
        ],
        tmp_path,
    )
    rows = (tmp_path / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    lrs = [float(r.split(",")[header.index("lr")]) for r in rows[1:]]
    assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4])
