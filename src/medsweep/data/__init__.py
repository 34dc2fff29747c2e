"""Data: sources, folds, transforms and the datamodule."""

from medsweep.data.datamodule import ImageDataModule, ImageDataset
from medsweep.data.folds import Holdout, KFold, Splits, check_disjoint
from medsweep.data.sources import ImageSource

__all__ = [
    "Holdout",
    "ImageDataModule",
    "ImageDataset",
    "ImageSource",
    "KFold",
    "Splits",
    "check_disjoint",
]
