"""The LightningDataModule: source -> split -> transforms -> sampler -> loaders."""

from __future__ import annotations

import logging
import os
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

AUTO_MIN_IMAGES = 1000  # smaller sets: loader workers cost more to start than they save
AUTO_MAX_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_workers(source: ImageSource, cpus: int) -> int:
    """Loader workers for ``data.num_workers=auto``.

    0 for pixels already in memory or a set of fewer than ``AUTO_MIN_IMAGES`` images (workers
    would only add their start-up); otherwise one less than ``cpus`` (the training process keeps
    one), at most ``AUTO_MAX_WORKERS``.
    """
    if source.images is not None or len(source) < AUTO_MIN_IMAGES:
        return 0
    return max(0, min(AUTO_MAX_WORKERS, cpus - 1))


def resolve_pin_memory(value: bool | str, accelerator: str | None) -> bool:
    """``data.pin_memory``: ``auto`` is true only when training on CUDA (``trainer.accelerator``
    gpu, cuda, or auto with a CUDA device present)."""
    if value == "auto":
        return str(accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if not isinstance(value, bool):
        raise ValueError(f"data.pin_memory={value!r} must be true, false or auto")
    return value


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
        num_workers: int | str = 0,
        train_albumentations: Sequence = (),
        train_monai: Sequence = (),
        seed: int = 42,
        splits_path: str | Path | None = None,
        pin_memory: bool | str = False,
        train_sampler: Callable[[np.ndarray], Sampler] | None = None,
        train_index_hook: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 2,
        cache: str = "none",
        cache_dir: str | Path | None = None,
        cpus: int | None = None,
    ):
        """``num_workers`` may be ``auto`` (see ``auto_workers``, from ``cpus``: default the
        process's); ``persistent_workers`` and ``prefetch_factor`` apply only with workers.
        ``cache`` (auto | memory | disk | none, see ``medsweep.data.cache.cache_mode``) serves
        decoded, resized images, built when the first loader is made; a disk cache is kept in
        ``cache_dir`` (default ``$MEDSWEEP_CACHE/images``), never inside the run folder."""
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
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cpus = cpus
        self.splits: Splits | None = None
        self.datasets: dict[str, ImageDataset] = {}
        self._images_cached = False

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
        from medsweep.data.cache import cache_mode
        from medsweep.data.preflight import check_source

        self.cpus = int(self.cpus or available_cpus())
        if self.num_workers == "auto":
            self.num_workers = auto_workers(self.source, self.cpus)
        if self.pin_memory == "auto":  # no trainer known here: CUDA when there is one
            self.pin_memory = resolve_pin_memory("auto", "auto")
        self.source, self.data_check = check_source(
            self.source, self.splitter, workers=self.num_workers
        )
        self.cache = cache_mode(self.cache, self.source, self.image_size, self.channels)
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

    @property
    def loader_settings(self) -> dict:
        """The loaders' settings as resolved at setup (``auto`` replaced): what the run used."""
        workers = int(self.num_workers) if self.num_workers != "auto" else None
        return {
            "num_workers": workers,
            "persistent_workers": bool(self.persistent_workers and workers),
            "pin_memory": bool(self.pin_memory),
            "prefetch_factor": self.prefetch_factor if workers else None,
            "cache": self.cache,
        }

    def _cache_folder(self) -> Path:
        from medsweep.data.filecache import user_cache_dir

        folder = (self.cache_dir or user_cache_dir() / "images").expanduser().resolve()
        if self.splits_path is not None:
            run_dir = self.splits_path.parent.expanduser().resolve()
            if folder == run_dir or run_dir in folder.parents:
                raise ValueError(
                    f"the image cache folder {folder} is inside the run folder {run_dir}: "
                    "set $MEDSWEEP_CACHE (or cache_dir) to a folder outside the run folders"
                )
        return folder

    def _use_image_cache(self) -> None:
        """Serve the datasets' images from the decoded-image cache (built once, here)."""
        if self._images_cached or self.cache in ("none", "auto") or not self.datasets:
            return
        from medsweep.data.cache import image_cache

        folder = self._cache_folder() if self.cache == "disk" else None
        cached = image_cache(
            self.source, self.image_size, self.channels, self.cache, folder, threads=self.cpus or 1
        )
        for dataset in self.datasets.values():
            dataset.source = cached
        self._images_cached = True

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

        self._use_image_cache()  # decoded once per run, not once per epoch
        # without random augmentation a sample is the same tensor every epoch: computed once
        dataset = tensor_cache(dataset)
        settings = self.loader_settings
        workers = settings["num_workers"] or 0
        with_workers = (
            {
                "worker_init_fn": _seed_worker,
                "persistent_workers": settings["persistent_workers"],
                "prefetch_factor": settings["prefetch_factor"],
            }
            if workers
            else {}
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=settings["pin_memory"],
            generator=torch.Generator().manual_seed(self.seed),
            **with_workers,
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
