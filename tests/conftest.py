"""Shared helpers: compose the real configs and run the real pipeline on tiny offline data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MEDSWEEP_CACHE", str(ROOT / ".pytest_cache" / "medsweep"))

# tiny and fast: a 16 px small CNN, one batch per stage, no progress bar
FAST = ["trainer=debug", "data.image_size=16", "data.batch_size=16", "model=small_cnn",
        "callbacks.progress_bar=null"]


def conf_options(group: str) -> list[str]:
    """Every option file of a config group (so a new file is tested automatically)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(overrides: list[str], output_dir: Path):
    """The composed run config, writing into ``output_dir``."""
    from medsweep.pipeline import compose_config

    return compose_config([*overrides, f"paths.output_dir={output_dir}"], CONF)


def run(overrides: list[str], output_dir: Path) -> dict:
    """Compose and train; return the metrics.json record."""
    from medsweep.pipeline import train

    return train(compose(overrides, output_dir))


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (or another script) as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def fast() -> list[str]:
    """Overrides for a seconds-long run."""
    return list(FAST)
