"""The LightningDataModule: source -> split -> transforms -> sampler -> loaders."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from medsweep.data.folds import Holdout, Splits, check_disjoint, save_splits
from medsweep.data.sampling import EpochSampler
from medsweep.data.sources import ImageSource
from medsweep.data.transforms import ImageTransform, normalization_stats, to_channels

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Samples ``indices`` of a source through ``transform``; targets as class index or multi-hot."""

    def __init__(
        self, source: ImageSource, indices: np.ndarray, channels: int, transform: ImageTransform
    ):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        """Labels of this part, in order."""
        return self.source.labels[self.indices]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(self.indices[i])
        image = to_channels(self.source.image(index), self.channels)
        label = self.source.labels[index]
        target = torch.as_tensor(label, dtype=torch.float32 if np.ndim(label) else torch.long)
        return self.transform(image), target


class SeededSamples(Dataset):
    """``dataset`` indexed by ``(index, seed)`` items: the transform is reseeded for each draw.

    A sample's augmentation is then a function of its seed alone, whichever process draws it.
    """

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset
        self.transform = dataset.transform

    def __len__(self) -> int:
        return len(self.dataset)

    def labels(self) -> np.ndarray:
        """Labels of the underlying part, in order."""
        return self.dataset.labels()

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        self.transform.reseed(seed)
        return self.dataset[index]


def _seed_worker(worker_id: int) -> None:
    """Seed a loader worker's python, numpy and transform streams from its torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.reseed(seed)


class ImageDataModule(L.LightningDataModule):
    """Builds the train / val / test loaders of one run from a source and a fold splitter."""

    def __init__(
        self,
        source: ImageSource,
        splitter=None,
        image_size: int = 32,
        channels: int = 1,
        normalization: str = "half",
        batch_size: int = 64,
        num_workers: int = 0,
        train_albumentations: Sequence = (),
        train_monai: Sequence = (),
        seed: int = 42,
        splits_path: str | Path | None = None,
        pin_memory: bool = False,
        train_sampler: Callable[[np.ndarray], Sampler] | None = None,
        train_index_hook: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ):
        super().__init__()
        self.source = source
        self.splitter = splitter or Holdout(seed=seed)
        self.image_size = image_size
        self.channels = channels
        self.normalization = normalization
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_albumentations = list(train_albumentations)
        self.train_monai = list(train_monai)
        self.seed = seed
        self.splits_path = Path(splits_path) if splits_path else None
        self.pin_memory = pin_memory
        self.train_sampler = train_sampler
        self.train_index_hook = train_index_hook
        self.splits: Splits | None = None
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def task(self) -> str:
        """binary, multiclass or multilabel."""
        return self.source.task

    @property
    def classes(self) -> list[str]:
        """Class (or label) names."""
        return self.source.classes

    @property
    def output_units(self) -> int:
        """Logits the model must produce."""
        return self.source.output_units

    def setup(self, stage: str | None = None) -> None:
        """Check the data, split, check for leaks, save the split, and build the datasets (once).

        The pre-flight check (``medsweep.data.preflight``) replaces ``source`` by its usable
        samples, with duplicate images joined into groups; its summary is ``data_check``.
        """
        if self.splits is not None:
            return
        from medsweep.data.preflight import check_source

        self.source, self.data_check = check_source(
            self.source, self.splitter, workers=self.num_workers
        )
        splits = self.splitter.split(self.source)
        check_disjoint(splits, self.source.groups, self.source.name)
        if not len(splits.train) or not len(splits.val):
            raise ValueError(
                f"{self.source.name}: the split left train={len(splits.train)}, "
                f"val={len(splits.val)} samples"
            )
        if self.splits_path is not None:
            self.splits_path.parent.mkdir(parents=True, exist_ok=True)
            meta = {
                "source": self.source.name,
                "n": len(self.source),
                "seed": self.seed,
                "fold": self.splitter.index,
                "n_folds": self.splitter.n_folds,
            }
            save_splits(splits, self.splits_path, meta)
        train_index = splits.train
        if self.train_index_hook is not None:
            train_index = self.train_index_hook(train_index, self.source.labels[train_index])
        mean, std = normalization_stats(
            self.normalization, self.channels, self._stats_images(splits.train)
        )
        plain = ImageTransform(self.image_size, mean, std)
        augmented = ImageTransform(
            self.image_size, mean, std, self.train_albumentations, self.train_monai, seed=self.seed
        )
        self.splits = splits
        self.datasets = {
            "train": ImageDataset(self.source, train_index, self.channels, augmented),
            "val": ImageDataset(self.source, splits.val, self.channels, plain),
            "test": ImageDataset(self.source, splits.test, self.channels, plain),
        }
        log.info("split %s: train=%d val=%d test=%d", self.source.name, *splits.sizes().values())

    def _stats_images(self, train: np.ndarray) -> np.ndarray | None:
        if self.normalization != "dataset":
            return None
        take = train[:: max(1, len(train) // 2000)]
        return np.stack(
            [
                to_channels(self.source.image(int(i)), self.channels).reshape(-1, self.channels)
                for i in take
            ]
        )

    def _loader(self, dataset: Dataset, sampler: Sampler | None = None) -> DataLoader:
        from medsweep.data.cache import tensor_cache

        # without random augmentation a sample is the same tensor every epoch: computed once
        dataset = tensor_cache(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_seed_worker if self.num_workers else None,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _next_epoch(self) -> int:
        """The epoch the trainer trains next: 0, or the one after a resumed checkpoint's."""
        trainer = getattr(self, "trainer", None)
        return trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) batches whose order and augmentation follow (seed, epoch)."""
        train = self.datasets["train"]
        sampler = self.train_sampler(train.labels()) if self.train_sampler is not None else None
        if sampler is None:
            sampler = RandomSampler(train, generator=torch.Generator())
        # the first epoch's batches may be drawn before Lightning's set_epoch (a resume, workers)
        epoch_sampler = EpochSampler(sampler, self.seed, epoch=self._next_epoch())
        return self._loader(SeededSamples(train), epoch_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"])
