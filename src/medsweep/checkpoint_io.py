"""When and how checkpoints reach the disk: held in memory and written together, at most every
``interval_s`` seconds and when a fit, validation or test ends (or fails).

A small study trains for seconds per epoch; writing a 130 MB checkpoint (weights and optimizer
state) after each of them costs as much as the training. A plain loop keeps its best weights in
memory; so does this: ``DeferredCheckpointIO`` keeps a copy of each checkpoint Lightning asks it
to save and writes the pending ones when ``interval_s`` has passed since its last write, and on
teardown. ``LastCheckpoint`` saves the latest epoch only when ``interval_s`` has passed, and at
the last epoch. A run killed hard loses at most the epochs of that interval; the files on disk
are always a consistent pair (the best and the last of the same moment).

The files due when a fit ends are written by a background thread (in one process; with several
the other ranks read them from disk at once) while the evaluation after the fit runs: it loads
the best weights from the copy in memory, and the run waits for the files (``wait``) before it
reports them.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def snapshot(
    checkpoint: dict[str, Any], spare: dict[tuple, list[torch.Tensor]] | None = None
) -> dict[str, Any]:
    """A deep copy of ``checkpoint`` whose tensors are copies in CPU memory.

    The tensors of a checkpoint are the live model's and optimizer's: copied as they are now,
    off the accelerator (where ``torch.save`` would have copied them too). ``spare``: CPU tensors
    of snapshots no longer needed, by ``_buffer_key``; a copy goes into one of the same shape,
    strides and type when there is one (taken out of ``spare``) instead of into new memory.
    """
    memo: dict[int, Any] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in memo:
            free = spare.get(_buffer_key(tensor)) if spare else None
            if free:
                memo[id(tensor)] = free.pop().copy_(tensor.detach())
            else:
                memo[id(tensor)] = tensor.detach().to("cpu", copy=True)
        return tensor

    apply_to_collection(checkpoint, torch.Tensor, keep)
    return copy.deepcopy(checkpoint, memo)


def _buffer_key(tensor: torch.Tensor) -> tuple | None:
    """What a CPU buffer must share with ``tensor`` to hold its copy (None: plain dense only)."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.requires_grad:
        return None
    return (tuple(tensor.shape), tensor.stride(), tensor.dtype)


def _release(checkpoint: dict[str, Any], spare: dict[tuple, list[torch.Tensor]]) -> None:
    """Put the tensors of a snapshot no longer needed into ``spare`` (each tensor once)."""
    seen: set[int] = set()

    def give(tensor: torch.Tensor) -> torch.Tensor:
        key = _buffer_key(tensor)
        if key is not None and id(tensor) not in seen and tensor.device.type == "cpu":
            seen.add(id(tensor))
            spare.setdefault(key, []).append(tensor)
        return tensor

    apply_to_collection(checkpoint, torch.Tensor, give)


class DeferredCheckpointIO(TorchCheckpointIO):
    """Checkpoints held in memory (copied at save time) and written at most every ``interval_s``.

    ``interval_s=0`` writes each checkpoint when it is saved. Pending checkpoints are written in
    the order they were saved, on the first save after the interval and on ``teardown`` (the end
    of every ``fit`` / ``validate`` / ``test``, including one ended by an exception).

    ``background=True``: what ``teardown`` finds pending is written by a thread, and loading one
    of those checkpoints meanwhile reads the copy in memory (the same tensors the file gets).
    Every later write, removal or load from disk waits for the thread first; ``wait`` waits for
    it and raises its error. Only in a single process: with several (DDP), ``teardown`` writes
    at once, since the other ranks read the files from disk.
    """

    def __init__(self, interval_s: float = 30.0, background: bool = True):
        super().__init__()
        if interval_s < 0:
            raise ValueError(f"interval_s={interval_s} must be >= 0")
        self.interval_s = float(interval_s)
        self.background = bool(background)
        self.pending: dict[str, dict[str, Any]] = {}
        # the CPU tensors of snapshots replaced or written during a stage, copied into by the
        # next snapshots: no new 100+ MB allocation (and its page faults) at every save
        self._spare: dict[tuple, list[torch.Tensor]] = {}
        self.last_write = time.monotonic()
        self.writes = 0
        # handed to the writer thread by teardown; only this (the calling) thread changes it
        self._writing: dict[str, dict[str, Any]] = {}
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        """Keep a copy of ``checkpoint`` for ``path``; write everything pending when it is due."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} does not take storage_options; got {storage_options!r}"
            )
        key = str(path)
        replaced = self.pending.pop(key, None)  # re-inserted last: writes keep the save order
        if replaced is not None:
            _release(replaced, self._spare)
        self.pending[key] = snapshot(checkpoint, self._spare)
        if time.monotonic() - self.last_write >= self.interval_s:
            self.flush()

    def held(self, path: str | Path) -> dict[str, Any] | None:
        """The checkpoint of ``path`` held in memory (pending, or being written), else None.
        Not a copy: for reading."""
        return self.pending.get(str(path), self._writing.get(str(path)))

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None, weights_only=None):
        """Load from disk, after writing a pending checkpoint of that path; one the writer thread
        is writing is read from memory (a copy of its structure: the caller may change it)."""
        held = self._writing.get(str(path))
        if held is not None and map_location in (None, "cpu", torch.device("cpu")):
            return _structure_copy(held)
        if str(path) in self.pending:
            self.flush()
        self.wait()
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Forget a pending checkpoint of ``path`` and remove its file."""
        self.wait()
        removed = self.pending.pop(str(path), None)
        if removed is not None:
            _release(removed, self._spare)
        super().remove_checkpoint(path)

    def flush(self) -> None:
        """Write every pending checkpoint, oldest first (after the writer thread's)."""
        self.wait()
        while self.pending:
            path = next(iter(self.pending))
            write_checkpoint(self.pending[path], path)
            _release(self.pending.pop(path), self._spare)
            self.writes += 1
        self.last_write = time.monotonic()

    def wait(self) -> None:
        """Wait until the writer thread has written its checkpoints; raise its error if it failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        self._writing.clear()
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"writing the checkpoints failed: {error}") from error

    def _write_in_background(self) -> None:
        self._writing = dict(self.pending)
        self.pending.clear()
        self._writer = threading.Thread(
            target=self._write_all, args=(dict(self._writing),), name="checkpoint-writer"
        )
        self._writer.start()
        self.last_write = time.monotonic()

    def _write_all(self, checkpoints: dict[str, dict[str, Any]]) -> None:
        path = None
        try:
            for path, checkpoint in checkpoints.items():
                write_checkpoint(checkpoint, path)
                self.writes += 1
        except BaseException as exc:  # handed to wait(); logged in case nothing waits
            self._error = exc
            log.error("writing the checkpoint %s failed: %s", path, exc)

    def teardown(self) -> None:
        """Write what is pending (end of a stage, or an exception); free the spare buffers."""
        try:
            if not self.pending:  # (a writer thread started by an earlier stage goes on)
                return
            if self.background and not _several_processes():
                self.wait()
                self._write_in_background()
            else:
                self.flush()
        finally:
            self._spare.clear()


def _several_processes() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _structure_copy(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``checkpoint``'s dicts and lists holding the same tensors."""
    memo: dict[int, Any] = {}
    apply_to_collection(checkpoint, torch.Tensor, lambda t: memo.setdefault(id(t), t))
    return copy.deepcopy(checkpoint, memo)


class LastCheckpoint(ModelCheckpoint):
    """The latest epoch as ``last.ckpt``: saved when ``interval_s`` has passed since its last
    save (or the fit's start) and at the fit's last epoch (``max_epochs`` reached, or a callback
    such as early stopping has stopped it).

    ``interval_s=0`` saves every epoch. Saves happen at epoch ends only, where a resumed run
    continues exactly.
    """

    def __init__(self, interval_s: float = 30.0, **kwargs: Any):
        kwargs.setdefault("filename", "last")
        kwargs.setdefault("monitor", None)
        kwargs.setdefault("save_top_k", 1)
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)
        if interval_s < 0:
            raise ValueError(f"interval_s={interval_s} must be >= 0")
        self.interval_s = float(interval_s)
        self._since = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._since = time.monotonic()

    @staticmethod
    def _final(trainer) -> bool:
        epochs, steps = trainer.max_epochs, trainer.max_steps
        return bool(
            trainer.should_stop
            or (epochs is not None and epochs >= 0 and trainer.current_epoch + 1 >= epochs)
            or (steps is not None and steps >= 0 and trainer.global_step >= steps)
        )

    def _save_topk_checkpoint(self, trainer, monitor_candidates: dict) -> None:
        final = self._final(trainer)
        if not final and time.monotonic() - self._since < self.interval_s:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        io = trainer.strategy.checkpoint_io
        if isinstance(io, DeferredCheckpointIO) and not final:
            io.flush()  # the best and the last on disk now belong to the same moment
        # (the last epoch's pair is written when the fit ends: DeferredCheckpointIO.teardown)
        self._since = time.monotonic()


# the parts of a full checkpoint that only resuming a fit reads (``trainer.fit(ckpt_path=...)``)
TRAINING_STATE = ("optimizer_states", "lr_schedulers")


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files leave out the optimizer and scheduler states.

    The best checkpoint is read for its weights (validation, test, evaluation, predict) and never
    resumed from: ``last.ckpt`` is. Without Adam's two moments per weight the file is a third of
    the size (ResNet-18: 45 instead of 134 MB), and so is every in-memory copy made at an
    improvement. Unlike ``save_weights_only``, every callback's ``on_save_checkpoint`` still
    runs (EMA puts its averaged weights into the state dict there) and the callbacks' states are
    kept. ``training_state=True``: the full checkpoint, as ``ModelCheckpoint``.
    """

    def __init__(self, training_state: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.training_state = bool(training_state)
        self._saving = False  # True while Lightning dumps a checkpoint this callback saves
        if self.save_last and not self.training_state:
            raise ValueError(
                "BestCheckpoint(save_last=true) would write last.ckpt without the optimizer state "
                "it is resumed with: use callbacks.last_checkpoint, or training_state=true"
            )

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        self._saving = not self.training_state
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self._saving = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Drop the training state from a checkpoint this callback saves (the others keep it).

        Lightning calls the checkpoint callbacks' hooks last, after every other callback's, so
        nothing that runs later reads what is dropped here.
        """
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._saving:
            for key in TRAINING_STATE:
                checkpoint.pop(key, None)


__all__ = [
    "BestCheckpoint",
    "CheckpointIO",
    "DeferredCheckpointIO",
    "LastCheckpoint",
    "write_checkpoint",
]
