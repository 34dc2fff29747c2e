"""Exact resume: a run killed mid-training and resumed from last.ckpt ends as the uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import ROOT, compose, run, run_cli
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, RandomSampler, TensorDataset, WeightedRandomSampler

from medsweep.callbacks import History, Timing
from medsweep.checkpoints import load_checkpoint
from medsweep.data.sampling import EpochSampler
from medsweep.pipeline import build_datamodule

# every random stream of training is on: shuffling, per-sample augmentation, MixUp, dropout
EPOCHS, BATCHES, BATCH_SIZE = 5, 6, 32
RUN = [
    "model=small_cnn",
    "data.image_size=16",
    f"data.batch_size={BATCH_SIZE}",
    f"+trainer.limit_train_batches={BATCHES}",
    f"trainer.max_epochs={EPOCHS}",
    "augmentation=basic",
    "augmentation.batch_transform.mixup_alpha=0.4",
    "model.head=mlp",
    "model.head_hidden=[16]",
    "model.head_dropout=0.3",
    "optimizer.lr=0.05",
    "callbacks.progress_bar=null",
    "logger=csv",
]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _checkpoint_epoch(path: Path) -> int | None:
    try:
        return int(load_checkpoint(path, mmap=True)["epoch"])
    except (FileNotFoundError, ValueError):  # not written yet
        return None


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    # the run to kill: max_epochs only bounds it (no schedule depends on it), so it is still
    # training whenever the poll below sees its epoch-1 checkpoint
    run(RUN, full)  # the uninterrupted run, here
    # paced (0.1 s before each batch, the computation unchanged) so that the poll below sees
    # epoch 1's checkpoint before a busy machine has run many more epochs
    pace = [
        "+callbacks.pace._target_=crash_callback.Pace",
        "+callbacks.pace.seconds=0.1",
        "callbacks.last_checkpoint.interval_s=0",  # last.ckpt at every epoch's end
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            *RUN,
            *pace,
            "trainer.max_epochs=100",
            f"hydra.run.dir={killed}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )
    try:
        deadline = time.monotonic() + 300
        while (_checkpoint_epoch(last) or 0) < 1 and proc.poll() is None:
            assert time.monotonic() < deadline, "no last.ckpt of epoch 1 in 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # kill -9, mid-training
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    killed_at = _checkpoint_epoch(last)
    assert killed_at is not None and killed_at < EPOCHS - 1
    assert json.loads((killed / "metrics.json").read_text())["status"] != "ok"

    resumed = tmp_path / "resumed"
    out = run_cli(["train.py", *RUN, f"resume={last}", f"hydra.run.dir={resumed}"])
    assert out.returncode == 0, out.stderr[-3000:]

    want = json.loads((full / "metrics.json").read_text())
    got = json.loads((resumed / "metrics.json").read_text())
    assert got["status"] == "ok" and got["epochs_run"] == want["epochs_run"] == EPOCHS
    assert got["best_epoch"] == want["best_epoch"]
    for part in ("val", "test"):
        assert got[part].keys() == want[part].keys()
        for key, value in want[part].items():
            assert got[part][key] == pytest.approx(value, abs=1e-6), (part, key)
    # every epoch, identical rows, in the resumed run's own folder
    assert _rows(resumed / "history.csv") == _rows(full / "history.csv")
    assert [int(r["epoch"]) for r in _rows(resumed / "history.csv")] == list(range(EPOCHS))
    # timing counts the epochs and images of the whole run, not only the resumed ones
    timing = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["callbacks"]["Timing"]
    assert len(timing["epoch_s"]) == EPOCHS
    assert timing["train_images"] == EPOCHS * BATCHES * BATCH_SIZE
    assert got["timing"]["fit_s"] >= sum(timing["epoch_s"])


def test_best_checkpoint_of_the_epochs_before_a_resume_carries_over(tmp_path):
    # lr=0 and no BatchNorm (mlp): no later epoch improves on epoch 0, the best one
    still = [
        "model=mlp",
        "optimizer.lr=0.0",
        "data.image_size=16",
        "data.batch_size=64",
        "+trainer.limit_train_batches=2",
        "callbacks.progress_bar=null",
    ]
    run([*still, "trainer.max_epochs=2"], tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    record = run([*still, "trainer.max_epochs=3", f"resume={last}"], tmp_path / "second")
    assert record["epochs_run"] == 3 and record["best_epoch"] == 0
    assert record["paths"]["checkpoint"] == "checkpoints/best.ckpt"  # in the resumed run's folder
    assert load_checkpoint(tmp_path / "second" / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert load_checkpoint(tmp_path / "first" / "checkpoints" / "best.ckpt")["epoch"] == 0


class _Recorder(L.LightningModule):
    """Keeps every training batch it sees, by epoch; learns nothing."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).append(
            torch.cat([x.flatten(1), y[:, None]], 1)
        )
        return self.layer(x.mean(dim=(1, 2, 3))[:, None]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(dm_overrides: list[str], tmp_path: Path, folder: str, epochs: int, resume=None):
    dm = build_datamodule(compose(dm_overrides, tmp_path / folder))
    module = _Recorder()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(tmp_path / folder, filename="last", monitor=None)],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    return {e: torch.cat(batches) for e, batches in module.seen.items()}


class _Constant(L.LightningModule):
    """Validates to the same value every epoch: epoch 0 stays the best."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/x", 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_evaluating_the_best_checkpoint_keeps_the_whole_runs_history_and_timing(tmp_path):
    loader = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=4)
    history, timing = History(tmp_path / "history.csv"), Timing()
    best = ModelCheckpoint(tmp_path, filename="best", monitor="val/x", mode="max")
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history, timing, best],
    )
    module = _Constant()
    trainer.fit(module, loader, loader)
    assert load_checkpoint(best.best_model_path)["epoch"] == 0
    trainer.validate(module, loader, ckpt_path=best.best_model_path, weights_only=True)
    # the checkpoint's own (epoch 0) rows and totals do not replace the run's
    assert [row["epoch"] for row in history.rows] == [0, 1, 2]
    assert len(timing.epoch_s) == 3 and timing.train_images == 3 * 8


@pytest.mark.parametrize(
    "options",
    [["data.num_workers=0"], ["data.num_workers=2", "balance=oversample"]],
    ids=["shuffle", "oversample-workers"],
)
def test_an_epochs_batches_do_not_depend_on_a_resume(tmp_path, options):
    overrides = ["data.image_size=16", "data.batch_size=16", "augmentation=basic", *options]
    straight = _fit(overrides, tmp_path, "straight", epochs=4)
    _fit(overrides, tmp_path, "first", epochs=2)
    resumed = _fit(overrides, tmp_path, "second", 4, resume=tmp_path / "first" / "last.ckpt")
    assert sorted(resumed) == [2, 3]
    for epoch in (2, 3):  # same samples, same order, same augmentation
        torch.testing.assert_close(resumed[epoch], straight[epoch], rtol=0, atol=0)
    assert not torch.equal(straight[2], straight[3])  # each epoch is drawn anew


def test_epoch_sampler_draws_an_epoch_from_seed_and_epoch_alone():
    weights = torch.tensor([1.0, 1.0, 1.0, 4.0, 4.0] * 8, dtype=torch.double)
    makers = {
        "shuffle": lambda: RandomSampler(range(40), generator=torch.Generator()),
        "weighted": lambda: WeightedRandomSampler(weights, 40, generator=torch.Generator()),
    }
    for name, make in makers.items():
        running = EpochSampler(make(), seed=7)
        passes = [list(running) for _ in range(4)]  # epochs 0..3, one after the other
        for epoch, drawn in enumerate(passes):
            assert list(EpochSampler(make(), seed=7, epoch=epoch)) == drawn, name
        assert list(EpochSampler(make(), seed=8, epoch=2)) != passes[2], name
        assert passes[1] != passes[2], name
        seeds = [s for drawn in passes for _, s in drawn]
        assert len(set(seeds)) == len(seeds), name  # every draw augments differently
    running.set_epoch(1)  # what Lightning calls before each epoch
    assert list(running) == passes[1]
    shuffled = [i for i, _ in EpochSampler(makers["shuffle"](), seed=7)]
    assert sorted(shuffled) == list(range(40)) and shuffled != list(range(40))


def test_epoch_sampler_needs_a_sampler_with_a_generator():
    with pytest.raises(TypeError, match="generator"):
        EpochSampler(RandomSampler(range(4)), seed=0)


def test_flips_of_one_transform_draw_independently():
    import albumentations as A

    from medsweep.data.transforms import ImageTransform

    transform = ImageTransform(
        4, (0.0,), (1.0,), [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0
    )
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    corner = {0: (False, False), 3: (True, False), 12: (False, True), 15: (True, True)}
    flips = []
    for seed in range(400):
        transform.reseed(seed)
        flips.append(corner[round(float(transform(image)[0, 0, 0]) * 255)])  # mean 0, std 1
    flips = np.array(flips)
    # each flip fires half the time, and the two agree half the time (binomial sd 0.025)
    np.testing.assert_allclose(flips.mean(0), [0.5, 0.5], atol=0.1)
    assert abs((flips[:, 0] == flips[:, 1]).mean() - 0.5) < 0.1
    transform.reseed(123)
    first = transform(image)
    transform.reseed(123)
    assert torch.equal(transform(image), first)
