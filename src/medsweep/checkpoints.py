"""Reading checkpoints weights-only: tensors and plain values, never code, with errors naming the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


def _reason(exc: Exception) -> str:
    """The line of torch's unpickling error that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if not line.startswith(
            ("Weights only load failed", "Please file", "Check the documentation")
        )
    ]
    reason = kept[-1] if kept else lines[0] if lines else type(exc).__name__
    return reason.split(" Please use ")[0].removeprefix("WeightsUnpickler error: ")


def load_checkpoint(
    path: str | Path, key: str = "checkpoint", mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint at ``path`` loaded weights-only on the CPU; errors name ``key`` and the file.

    ``mmap`` maps tensor storage instead of reading it (files written by ``torch.save``), for a
    cheap check of what a checkpoint holds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(
            path,
            map_location="cpu",
            weights_only=True,
            mmap=mmap and zipfile.is_zipfile(path),
        )
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{key}={path} is not a weights-only checkpoint: it holds Python objects that loading "
            f"would have to run ({_reason(exc)}); it was not loaded. Only checkpoints of tensors "
            "and plain values (as Lightning writes them) are read."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{key}={path} could not be read as a checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{key}={path} is not a Lightning checkpoint (no state_dict in it)")
    return checkpoint


def checked_checkpoint(path: str | Path | None, key: str) -> str | None:
    """``path`` once it is known to load weights-only as a Lightning checkpoint (None: None)."""
    if path is None:
        return None
    load_checkpoint(path, key, mmap=True)
    return str(path)
