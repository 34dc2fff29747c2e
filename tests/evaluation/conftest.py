"""Runs trained once per session on tiny offline digits data: binary, multiclass, multilabel, and
a 2-configuration x 2-fold k-fold multirun (binary)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TASK_OVERRIDES, run

# a few real training steps (not fast_dev_run) so that every val/test sample gets a prediction
TRAIN = [
    "trainer=cpu",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=6",
    "data.image_size=16",
    "data.batch_size=64",
    "model=small_cnn",
    "callbacks.progress_bar=null",
]
TASKS = TASK_OVERRIDES


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One finished run folder per task."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for task, overrides in TASKS.items():
        record = run([*TRAIN, *overrides], root / task)
        assert record["status"] == "ok" and record["task"] == task
        out[task] = root / task
    return out


@pytest.fixture(scope="session")
def multirun(tmp_path_factory) -> Path:
    """Two configurations (learning rates) x two k-fold folds, one folder per job."""
    root = tmp_path_factory.mktemp("multirun")
    for lr in (0.001, 0.01):
        for fold in (0, 1):
            overrides = [
                *TRAIN,
                *TASKS["binary"],
                "fold=kfold",
                "fold.n_folds=2",
                f"fold.index={fold}",
                f"optimizer.lr={lr}",
            ]
            assert run(overrides, root / f"lr{lr}_fold{fold}")["status"] == "ok"
    return root


@pytest.fixture(scope="session")
def evaluated(trained) -> dict:
    """Each task's run evaluated once (all sections, few bootstrap resamples)."""
    from medsweep.evaluation import EvalSettings, evaluate_run

    settings = EvalSettings(n_boot=150, top_k=3, wandb=False)
    return {task: evaluate_run(path, settings) for task, path in trained.items()}
