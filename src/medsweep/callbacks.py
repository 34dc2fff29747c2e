"""Callbacks every run carries: the per-epoch history file, the timing record, the per-epoch
seeds of the global random streams and the carrying of checkpoints into a resumed run's folder."""

from __future__ import annotations

import csv
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from medsweep.seeding import derived_seeds

log = logging.getLogger(__name__)


class _FitState(L.Callback):
    """A callback whose state is restored from a checkpoint only when fitting resumes from it.

    Lightning also restores callback states in ``validate`` / ``test`` with a ``ckpt_path``; the
    best checkpoint evaluated after fit would then roll the totals back to its epoch.
    """

    _fitting = False

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._fitting = trainer.state.fn == TrainerFn.FITTING

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fitting:
            self._restore(state_dict)

    def _restore(self, state_dict: dict[str, Any]) -> None:
        raise NotImplementedError


class History(_FitState):
    """Writes ``history.csv``: one row per epoch with the epoch-level train and val metrics and lr.

    The rows travel in checkpoints, so a resumed run's file holds every epoch of the run.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self._pending: int | None = None
        self._lr: float | None = None
        self._trainer: L.Trainer | None = None

    def _row(self, trainer: L.Trainer, epoch: int) -> dict:
        row: dict = {"epoch": epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(("train/", "val/")) and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        if self._lr is not None:
            row["lr"] = self._lr
        return row

    def _write(self) -> None:
        columns = ["epoch"] + sorted({k for r in self.rows for k in r} - {"epoch", "lr"}) + ["lr"]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        self.rows.append(self._row(trainer, self._pending))
        self._pending = None
        self._write()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rows:  # resumed: the earlier epochs' rows came with the checkpoint
            self._write()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the previous epoch's train metrics are reduced only after its validation: write it now
        self._flush(trainer)
        # the rate this epoch trains with (the head's group, the last one), before its scheduler step
        self._lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch
        self._trainer = trainer

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def state_dict(self) -> dict[str, Any]:
        """The rows so far; a checkpoint taken at the end of an epoch includes that epoch's row."""
        rows = list(self.rows)
        if self._pending is not None and self._trainer is not None:
            # checkpoints are saved after the module's epoch-end logging, so the row is complete
            rows.append(self._row(self._trainer, self._pending))
        return {"rows": rows}

    def _restore(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]
        self._pending = None


class Timing(_FitState):
    """Measures fit seconds, seconds per epoch and training images per second.

    The totals travel in checkpoints: a resumed run's timing covers the epochs before the resume.
    """

    def __init__(self):
        self.fit_s = 0.0
        self.epoch_s: list[float] = []
        self.train_images = 0
        self.train_s = 0.0
        self._fit_before = 0.0  # fit seconds of the run this one resumed
        self._fit_start = time.perf_counter()
        self.first_step_at: float | None = None  # wall-clock time of this process's first batch

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_s = self._fit_before + time.perf_counter() - self._fit_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_s.append(time.perf_counter() - self._epoch_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_s += time.perf_counter() - self._batch_start
        self.train_images += len(batch[0])

    def state_dict(self) -> dict[str, Any]:
        """Totals up to now (fit seconds include the resumed run's)."""
        return {
            "fit_s": self._fit_before + time.perf_counter() - self._fit_start,
            "epoch_s": list(self.epoch_s),
            "train_images": self.train_images,
            "train_s": self.train_s,
        }

    def _restore(self, state_dict: dict[str, Any]) -> None:
        self._fit_before = float(state_dict["fit_s"])
        self.epoch_s = [float(s) for s in state_dict["epoch_s"]]
        self.train_images = int(state_dict["train_images"])
        self.train_s = float(state_dict["train_s"])

    def summary(self) -> dict:
        """Timings for ``metrics.json``."""
        per_epoch = sum(self.epoch_s) / len(self.epoch_s) if self.epoch_s else math.nan
        rate = self.train_images / self.train_s if self.train_s else math.nan
        return {
            "fit_s": round(self.fit_s, 3),
            "s_per_epoch": round(per_epoch, 3),
            "train_img_per_s": round(rate, 1),
            "first_step_at": self.first_step_at,
        }


class EpochSeeds(L.Callback):
    """Seeds python's, numpy's and torch's global generators (dropout, ...) at every training
    epoch's start from (seed, epoch), and restarts the module's batch transform stream (MixUp /
    CutMix) the same way: an epoch draws the same numbers whether or not the run was resumed.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        python_seed, numpy_seed, torch_seed = (
            int(s) for s in derived_seeds(self.seed, epoch, "global", 3)
        )
        random.seed(python_seed)
        np.random.seed(numpy_seed)
        torch.manual_seed(torch_seed)  # every device's generator
        batch_transform = getattr(pl_module, "batch_transform", None)
        if hasattr(batch_transform, "set_epoch"):
            batch_transform.set_epoch(epoch)


class CarryCheckpoints(L.Callback):
    """Resuming into another folder: copies the files each ModelCheckpoint tracks (best, last)
    from beside the resumed checkpoint into this run's checkpoint folder and points the restored
    state at the copies, so best-model selection goes on over the whole run.

    Lightning alone keeps only ``best_model_path`` when the folder changes and forgets the best
    score, so the first resumed epoch would become "best" whatever its score.
    """

    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.ckpt_path is None or trainer.state.fn != TrainerFn.FITTING:
            return
        source_dir = Path(trainer.ckpt_path).resolve().parent
        states = checkpoint.get("callbacks", {})
        for callback in trainer.checkpoint_callbacks:
            state = (
                states.get(callback.state_key) if isinstance(callback, ModelCheckpoint) else None
            )
            if not state or state.get("dirpath") in (None, callback.dirpath):
                continue
            carried = self._carry(state, source_dir, Path(callback.dirpath))
            if carried is not None:
                states[callback.state_key] = carried

    def _carry(self, state: dict, source_dir: Path, target_dir: Path) -> dict | None:
        """``state`` with its files copied to ``target_dir``; None when one of them is missing."""
        names = {p for p in (state.get(k) for k in self._PATHS) if p}
        names |= set(state.get("best_k_models") or {})
        moved: dict[str, str] = {}
        for old in sorted(names):
            source = source_dir / Path(old).name  # only files beside the resumed checkpoint
            if not source.is_file():
                log.warning(
                    "resume: %s is not beside the resumed checkpoint (%s); the best checkpoint "
                    "of the epochs before the resume is not carried over",
                    Path(old).name,
                    source_dir,
                )
                return None
            target = target_dir / source.name
            target_dir.mkdir(parents=True, exist_ok=True)
            if source.resolve() != target.resolve():
                shutil.copy2(source, target)
            moved[old] = str(target)
        carried = dict(state, dirpath=str(target_dir))
        for key in self._PATHS:
            if state.get(key):
                carried[key] = moved[state[key]]
        carried["best_k_models"] = {
            moved[path]: score for path, score in (state.get("best_k_models") or {}).items()
        }
        return carried
