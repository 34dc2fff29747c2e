"""Loader settings as config: auto workers and pinning, their checks, their record, exact results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONF, FAST, compose, run
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from medsweep.config import register_resolvers
from medsweep.config_check import ConfigError
from medsweep.data.datamodule import (
    AUTO_MAX_WORKERS,
    AUTO_MIN_IMAGES,
    ImageDataModule,
    auto_workers,
    resolve_pin_memory,
)
from medsweep.data.folds import Holdout
from medsweep.data.sources import ImageSource, digits
from medsweep.pipeline import build_datamodule, job_cpus

LOADER_FIELDS = ("num_workers", "persistent_workers", "pin_memory", "prefetch_factor", "cache")


def _file_source(n: int) -> ImageSource:
    """A source of ``n`` image paths (never opened here)."""
    labels = np.arange(n, dtype=np.int64) % 2
    return ImageSource(labels, ["a", "b"], "files", paths=[f"/nowhere/{i}.png" for i in range(n)])


def test_every_data_option_sets_the_loader_fields_alike() -> None:
    from omegaconf import OmegaConf

    values = set()
    for path in sorted((CONF / "data").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "defaults" in node:  # a variant of another option: it inherits the fields
            continue
        values.add(tuple(node.get(key) for key in LOADER_FIELDS))
    assert values == {("auto", True, "auto", 2, "auto")}


def test_auto_workers_follow_the_source_and_the_cpus() -> None:
    in_memory = digits()
    assert len(in_memory) >= AUTO_MIN_IMAGES
    assert [auto_workers(in_memory, cpus) for cpus in (1, 4, 64)] == [0, 0, 0]
    tiny = _file_source(AUTO_MIN_IMAGES - 1)
    assert [auto_workers(tiny, cpus) for cpus in (1, 4, 64)] == [0, 0, 0]
    files = _file_source(AUTO_MIN_IMAGES)
    # one CPU stays with the training process; at most AUTO_MAX_WORKERS (8)
    assert AUTO_MAX_WORKERS == 8
    assert [auto_workers(files, cpus) for cpus in (1, 2, 4, 9, 64)] == [0, 1, 3, 8, 8]


def test_pin_memory_auto_only_on_cuda() -> None:
    cuda = torch.cuda.is_available()
    assert resolve_pin_memory("auto", "cpu") is False
    assert resolve_pin_memory("auto", "gpu") is cuda
    assert resolve_pin_memory("auto", "auto") is cuda
    assert resolve_pin_memory(True, "cpu") is True and resolve_pin_memory(False, "gpu") is False
    with pytest.raises(ValueError, match="data.pin_memory"):
        resolve_pin_memory("yes", "cpu")


def test_job_cpus_divide_the_allowed_cpus_among_parallel_jobs(monkeypatch) -> None:
    allowed = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch's threads: not the loader's budget
    monkeypatch.setenv("MEDSWEEP_JOB_CPUS", "1")  # a launcher's budget of one CPU per job
    assert job_cpus() == 1
    monkeypatch.setenv("MEDSWEEP_JOB_CPUS", str(allowed + 5))  # more than the job has
    assert job_cpus() == allowed
    monkeypatch.delenv("MEDSWEEP_JOB_CPUS")
    register_resolvers()
    try:
        assert job_cpus() == allowed  # no launcher: one job
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(
                "train",
                ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        assert job_cpus() == max(1, allowed // 2)
    finally:
        HydraConfig.instance().cfg = None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        assert job_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_loaders_get_the_resolved_settings() -> None:
    def loaders(**kwargs) -> list:
        dm = ImageDataModule(digits(), Holdout(seed=0), image_size=8, batch_size=64, **kwargs)
        dm.setup()
        return [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()], dm

    made, dm = loaders(num_workers=2, persistent_workers=False, prefetch_factor=3)
    for loader in made:
        assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (
            2,
            False,
            3,
        )
    assert dm.loader_settings == {
        "num_workers": 2,
        "persistent_workers": False,
        "pin_memory": False,
        "prefetch_factor": 3,
        "cache": "none",
    }
    made, dm = loaders(num_workers=3, prefetch_factor=4)
    assert all(loader.persistent_workers and loader.prefetch_factor == 4 for loader in made)
    # auto on an in-memory set: no workers, so neither persistence nor prefetching applies
    made, dm = loaders(num_workers="auto", prefetch_factor=5, cache="auto")
    for loader in made:
        assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (
            0,
            False,
            None,
        )
    assert dm.loader_settings == {
        "num_workers": 0,
        "persistent_workers": False,
        "pin_memory": False,
        "prefetch_factor": None,
        "cache": "none",
    }


def test_the_run_records_its_loader_settings(tmp_path: Path) -> None:
    record = run([*FAST, "data=digits_binary", "data.prefetch_factor=7"], tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # digits are pixels in memory: auto means no workers and no image cache; CPU: no pinning
    want = {
        "num_workers": 0,
        "persistent_workers": False,
        "pin_memory": False,
        "prefetch_factor": None,
        "cache": "none",
    }
    assert record["data"]["loader"] == saved["data"]["loader"] == want
    assert saved["data"]["n"] == 1797 and saved["status"] == "ok"
    explicit = build_datamodule(
        compose(
            [*FAST, "data.num_workers=2", "data.persistent_workers=false", "data.pin_memory=true"],
            tmp_path / "explicit",
        )
    )
    assert explicit.loader_settings == {
        "num_workers": 2,
        "persistent_workers": False,
        "pin_memory": True,
        "prefetch_factor": 2,
        "cache": "none",
    }


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("data.num_workers=-1", "data.num_workers", "-1 must be an integer >= 0 or auto"),
        ("data.num_workers=many", "data.num_workers", "'many' must be an integer >= 0 or auto"),
        ("data.prefetch_factor=0", "data.prefetch_factor", "0 must be a positive integer"),
        ("data.persistent_workers=2", "data.persistent_workers", "2 must be bool"),
        ("data.pin_memory=sometimes", "data.pin_memory", "must be true, false or auto"),
        ("data.cache=ram", "data.cache", "'ram' must be one of ['auto', 'memory', 'disk', 'none']"),
    ],
)
def test_a_wrong_loader_setting_stops_before_training(override, key, expected, tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        run([*FAST, override], tmp_path)
    message = str(info.value)
    assert f"{key}=" in message and expected in message, message
    assert f"set by the override {override!r}" in message
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and key in saved["error"]
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "history.csv").exists()


def test_workers_do_not_change_a_result(tmp_path: Path) -> None:
    """Random augmentation drawn in two worker processes trains exactly as in the main process."""
    base = [
        *FAST,
        "trainer=cpu",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "data=digits_binary",
        "augmentation=basic",
    ]
    inline = run([*base, "data.num_workers=0"], tmp_path / "inline")
    workers = run([*base, "data.num_workers=2", "data.prefetch_factor=3"], tmp_path / "workers")
    assert inline["data"]["loader"]["num_workers"] == 0
    assert workers["data"]["loader"]["num_workers"] == 2
    assert inline["best_epoch"] == workers["best_epoch"]
    assert inline["val"] == workers["val"] and inline["test"] == workers["test"]
    assert (tmp_path / "inline" / "history.csv").read_text() == (
        tmp_path / "workers" / "history.csv"
    ).read_text()
