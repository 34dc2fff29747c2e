"""Hand-made run folders with known numbers for the report tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SIZES = {"train": 800, "val": 200, "test": 250}

# Fold scores of a three-configuration sweep (loss=ce, loss=focal, loss=bce), five folds.
CE_VAL_ACC = [0.80, 0.82, 0.84, 0.86, 0.88]
CE_VAL_AUROC = [0.90, 0.91, 0.92, 0.93, 0.94]
CE_TEST_ACC = [0.78, 0.80, 0.79, 0.81, 0.82]
FOCAL_VAL_ACC = [0.85, 0.88, 0.88, 0.91, 0.93]  # ce + [0.05, 0.06, 0.04, 0.05, 0.05]
FOCAL_VAL_AUROC = [0.92, 0.92, 0.95, 0.93, 0.98]  # ce + [0.02, 0.01, 0.03, 0.00, 0.04]
FOCAL_TEST_ACC = [0.79, 0.82, 0.80, 0.83, 0.81]
BCE_VAL_ACC = [0.70, 0.72, 0.74]  # folds 0-2 ok; fold 3 failed; fold 4 never ran
BCE_VAL_AUROC = [0.85, 0.86, 0.87]
BCE_TEST_ACC = [0.69, 0.70, 0.74]
BCE_ERROR = "ValueError: loss is nan at epoch 3"


def write_history(run_dir: Path, epochs: int = 4) -> Path:
    """Write a Lightning-style history.csv: train and val values on separate rows."""
    lines = ["epoch,train/loss,train/acc,train/auroc,val/loss,val/acc,val/auroc,lr"]
    for epoch in range(epochs):
        loss = 1.0 / (epoch + 1)
        lines.append(
            f"{epoch},{loss:.3f},{0.5 + 0.1 * epoch:.2f},{0.6 + 0.08 * epoch:.2f},,,,0.001"
        )
        lines.append(
            f"{epoch},,,,{loss + 0.1:.3f},{0.45 + 0.1 * epoch:.2f},{0.55 + 0.09 * epoch:.2f},"
        )
    path = run_dir / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_run(
    run_dir: Path,
    overrides: dict[str, Any],
    fold: int | None,
    val: dict[str, float] | None = None,
    test: dict[str, float] | None = None,
    *,
    status: str = "ok",
    error: str | None = None,
    n_folds: int | None = 5,
    seed: int = 42,
    sizes: dict[str, int] | None = SIZES,
    wandb_project: str | None = None,
    history: bool = True,
    config_key: str | None = None,
) -> Path:
    """Write one run folder (metrics.json, history.csv, .hydra/overrides.yaml)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    full = dict(overrides)
    if fold is not None:
        full["fold.index"] = fold
    if config_key is None:
        config_key = ",".join(sorted(f"{k}={v}" for k, v in overrides.items() if k != "seed"))
    hydra = run_dir / ".hydra"
    hydra.mkdir(exist_ok=True)
    (hydra / "overrides.yaml").write_text("".join(f"- {k}={v}\n" for k, v in full.items()))
    if status != "ok":
        data: dict[str, Any] = {
            "schema": 1,
            "status": status,
            "error": error,
            "overrides": full,
            "config_key": config_key,
            "fold": fold,
            "n_folds": n_folds,
            "seed": seed,
            "paths": {"run_dir": str(run_dir), "history": "history.csv"},
        }
    else:
        val = dict(val or {})
        data = {
            "schema": 1,
            "status": "ok",
            "error": None,
            "task": "multiclass",
            "classes": ["0", "1", "2"],
            "overrides": full,
            "config_key": config_key,
            "fold": fold,
            "n_folds": n_folds,
            "seed": seed,
            "best_epoch": 2,
            "epochs_run": 4,
            "monitor": "val/auroc",
            "monitor_mode": "max",
            "val": val,
            "test": dict(test or {}),
            "confusion": {"val": [[1, 0], [0, 1]]},
            "timing": {"fit_s": 12.5, "s_per_epoch": 3.1, "train_img_per_s": 250.0},
            "paths": {
                "run_dir": "/somewhere/else/run",  # as written on the training machine
                "checkpoint": "checkpoints/best.ckpt",
                "history": "history.csv",
                "splits": "splits.json",
                "config": ".hydra/config.yaml",
            },
            "versions": {"medsweep": "0.1.0", "torch": "2.14.1"},
            "git": "3f2c1ab",
            "created": "2026-11-23T05:00:00",
        }
        if sizes is not None:
            data["sizes"] = sizes
    if wandb_project:
        data["wandb"] = {"project": wandb_project, "dir": str(run_dir / "wandb"), "mode": "offline"}
    if history:
        write_history(run_dir)
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _scores(acc: float, auroc: float, test_acc: float) -> tuple[dict, dict]:
    val = {
        "loss": round(1.0 - acc, 4),
        "acc": acc,
        "balanced_acc": round(acc - 0.01, 4),
        "precision": round(acc - 0.02, 4),
        "recall": round(acc - 0.01, 4),
        "f1": round(acc - 0.015, 4),
        "auroc": auroc,
        "auroc/glioma": round(auroc - 0.01, 4),
    }
    test = {"loss": round(1.0 - test_acc, 4), "acc": test_acc, "auroc": round(test_acc + 0.1, 4)}
    return val, test


def make_sweep(root: Path, wandb_project: str | None = None) -> Path:
    """Write a Hydra-like multirun: jobs 0-4 loss=ce, 5-9 loss=focal, 10-13 loss=bce."""
    job = 0
    for loss, accs, aurocs, tests in (
        ("ce", CE_VAL_ACC, CE_VAL_AUROC, CE_TEST_ACC),
        ("focal", FOCAL_VAL_ACC, FOCAL_VAL_AUROC, FOCAL_TEST_ACC),
        ("bce", BCE_VAL_ACC, BCE_VAL_AUROC, BCE_TEST_ACC),
    ):
        for fold, (acc, auroc, test_acc) in enumerate(zip(accs, aurocs, tests, strict=True)):
            val, test = _scores(acc, auroc, test_acc)
            write_run(root / str(job), {"loss": loss}, fold, val, test, wandb_project=wandb_project)
            job += 1
    write_run(root / str(job), {"loss": "bce"}, 3, status="failed", error=BCE_ERROR)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A three-configuration multirun folder with one failed and one missing fold."""
    return make_sweep(tmp_path / "multirun")


@pytest.fixture(scope="session")
def sweep_factory() -> Callable[..., Path]:
    """The sweep writer, for tests that need a sweep at a place of their choosing."""
    return make_sweep


@pytest.fixture
def make_run() -> Callable[..., Path]:
    """The run writer, for tests that build their own trees."""
    return write_run
