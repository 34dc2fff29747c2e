"""Torch threads per run: trainer.threads, OMP_NUM_THREADS, physical cores, parallel jobs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
from helpers import CONF, compose
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from medsweep.config import register_resolvers
from medsweep.pipeline import build_trainer, torch_threads


def physical_cores() -> int:
    """Distinct (core, socket) pairs among the CPUs this process may run on, as lscpu lists them."""
    if not shutil.which("lscpu"):
        pytest.skip("lscpu is not installed")
    rows = subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET"], capture_output=True, text=True).stdout
    allowed = os.sched_getaffinity(0)
    cores = {
        tuple(line.split(",")[1:])
        for line in rows.splitlines()
        if line and not line.startswith("#") and int(line.split(",")[0]) in allowed
    }
    return len(cores)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    HydraConfig.instance().cfg = None


@pytest.fixture
def hydra_launcher():
    """Make a composed sweep config (with its launcher) the current HydraConfig."""

    def use(*overrides: str) -> None:
        register_resolvers()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose("train", list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)

    return use


def test_explicit_threads_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert torch_threads(2) == 2


def test_omp_num_threads_is_respected_when_threads_is_null(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert torch_threads(None) == 3


def test_null_threads_use_the_physical_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(None) == physical_cores()


def test_null_threads_are_capped_by_the_cpu_affinity(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        assert torch_threads(None) == 1
    finally:
        os.sched_setaffinity(0, before)


def test_parallel_jobs_share_the_cores(monkeypatch, hydra_launcher):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    hydra_launcher("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert torch_threads(None) == max(1, physical_cores() // 2)
    hydra_launcher("hydra/launcher=joblib")  # n_jobs=-1: one job per CPU
    assert torch_threads(None) == 1
    hydra_launcher()  # the basic launcher runs one job at a time
    assert torch_threads(None) == physical_cores()


def test_build_trainer_sets_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    target = 1 if torch.get_num_threads() != 1 else 2
    cfg = compose([f"trainer.threads={target}"], tmp_path)
    trainer = build_trainer(cfg, tmp_path, [])
    assert torch.get_num_threads() == target
    assert trainer.max_epochs == cfg.trainer.max_epochs  # the rest still reaches the Trainer
    build_trainer(compose(["trainer=debug"], tmp_path), tmp_path, [])
    assert torch.get_num_threads() == 1  # null: OMP_NUM_THREADS


@pytest.mark.parametrize("value", [0, -2])
def test_invalid_threads_fail_naming_the_key(value, tmp_path):
    with pytest.raises(ValueError, match=r"trainer\.threads"):
        build_trainer(compose([f"trainer.threads={value}"], tmp_path), tmp_path, [])
