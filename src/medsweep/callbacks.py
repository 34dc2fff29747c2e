"""Callbacks every run carries: the per-epoch history file and the timing record."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import lightning as L


class History(L.Callback):
    """Writes ``history.csv``: one row per epoch with the epoch-level train and val metrics and lr."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self._pending: int | None = None
        self._lr: float | None = None

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        row: dict = {"epoch": self._pending}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(("train/", "val/")) and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        if self._lr is not None:
            row["lr"] = self._lr
        self.rows.append(row)
        self._pending = None
        columns = ["epoch"] + sorted({k for r in self.rows for k in r} - {"epoch", "lr"}) + ["lr"]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the previous epoch's train metrics are reduced only after its validation: write it now
        self._flush(trainer)
        # the rate this epoch trains with (the head's group, the last one), before its scheduler step
        self._lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)


class Timing(L.Callback):
    """Measures fit seconds, seconds per epoch and training images per second."""

    def __init__(self):
        self.fit_s = 0.0
        self.epoch_s: list[float] = []
        self.train_images = 0
        self.train_s = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_s = time.perf_counter() - self._fit_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_s.append(time.perf_counter() - self._epoch_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_s += time.perf_counter() - self._batch_start
        self.train_images += len(batch[0])

    def summary(self) -> dict:
        """Timings for ``metrics.json``."""
        per_epoch = sum(self.epoch_s) / len(self.epoch_s) if self.epoch_s else math.nan
        rate = self.train_images / self.train_s if self.train_s else math.nan
        return {
            "fit_s": round(self.fit_s, 3),
            "s_per_epoch": round(per_epoch, 3),
            "train_img_per_s": round(rate, 1),
        }
