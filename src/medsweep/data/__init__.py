"""Data: sources, folds, transforms and the datamodule.

The names below are imported on first use, so that ``medsweep.data.options`` (and the config
check that reads it) does not import torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Holdout": "medsweep.data.folds",
    "KFold": "medsweep.data.folds",
    "Splits": "medsweep.data.folds",
    "check_disjoint": "medsweep.data.folds",
    "ImageDataModule": "medsweep.data.datamodule",
    "ImageDataset": "medsweep.data.datamodule",
    "ImageSource": "medsweep.data.sources",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
