"""The decoded-image cache: the same tensors as without it, keyed by the files' content."""

from __future__ import annotations

import pickle
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import write_image_folder
from PIL import Image

from medsweep.data.cache import (
    CachedSource,
    cached_images,
    cached_source,
    resize_like_transform,
    source_key,
)
from medsweep.data.datamodule import ImageDataset
from medsweep.data.sources import digits, image_folder
from medsweep.data.transforms import ImageTransform


def _augmented(size: int, channels: int) -> ImageTransform:
    ops = [A.HorizontalFlip(p=0.5), A.Rotate(limit=20, p=0.7)]
    return ImageTransform(size, (0.5,) * channels, (0.5,) * channels, ops, seed=3)


def _tensors(source, size: int, channels: int) -> list[torch.Tensor]:
    dataset = ImageDataset(source, np.arange(len(source)), channels, _augmented(size, channels))
    return [dataset[i][0] for i in range(len(dataset))]


@pytest.mark.parametrize("size,channels", [(20, 1), (12, 3)])
def test_cached_images_give_the_same_tensors(tmp_path: Path, size: int, channels: int) -> None:
    source = image_folder(str(write_image_folder(tmp_path / "folder", n_per_class=4)))
    want = _tensors(source, size, channels)
    got = _tensors(cached_source(source, size, channels), size, channels)
    assert len(got) == len(want) == len(source)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_in_memory_cache_is_built_once_per_process() -> None:
    source = digits()
    first = cached_images(source, 16, 1)
    assert first.shape == (len(source), 16, 16, 1) and first.dtype == np.uint8
    assert cached_images(digits(), 16, 1) is first  # same content, same array
    assert cached_images(source, 17, 1) is not first
    assert not first.flags.writeable


def test_a_changed_file_changes_the_key(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=2)
    source = image_folder(str(root))
    key = source_key(source, 16, 1)
    before = cached_images(source, 16, 1)[0].copy()
    assert source_key(image_folder(str(root)), 16, 1) == key
    assert source_key(source, 24, 1) != key
    path = Path(source.paths[0])
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(path)
    changed = image_folder(str(root))
    assert source_key(changed, 16, 1) != key
    after = cached_images(changed, 16, 1)[0]
    assert np.array_equal(after, resize_like_transform(changed.image(0), 16, 1))
    assert not np.array_equal(after, before)


def test_large_sets_are_memory_mapped_files_shared_with_workers(tmp_path: Path) -> None:
    source = digits()
    images = cached_images(source, 16, 1, folder=tmp_path, memory_limit=0)
    files = list(tmp_path.glob("images-*.npy"))
    assert len(files) == 1 and isinstance(images, np.memmap)
    assert np.array_equal(images, cached_images(source, 16, 1))  # the in-memory build agrees
    again = cached_images(source, 16, 1, folder=tmp_path, memory_limit=0)
    assert Path(again.filename) == files[0]
    wrapped = pickle.loads(pickle.dumps(CachedSource(source, images)))
    assert isinstance(wrapped.images_cached, np.memmap)
    assert np.array_equal(wrapped.image(5), images[5])
    assert wrapped.classes == source.classes and len(wrapped) == len(source)


def _fast_run(tmp_path: Path, name: str) -> dict:
    from helpers import FAST, run

    overrides = [*FAST, "trainer=cpu", "trainer.max_epochs=2", "augmentation=none"]
    return run(
        [*overrides, "+trainer.limit_train_batches=3", "data=digits_binary"], tmp_path / name
    )


def test_tensor_cache_keeps_every_result(tmp_path: Path, monkeypatch) -> None:
    import medsweep.data.cache as cache

    cached = _fast_run(tmp_path, "cached")
    monkeypatch.setattr(cache, "TENSOR_LIMIT", 0)  # every sample transformed at every draw
    plain = _fast_run(tmp_path, "plain")
    assert cached["best_epoch"] == plain["best_epoch"]
    assert cached["val"] == plain["val"] and cached["test"] == plain["test"]
    assert (tmp_path / "cached" / "history.csv").read_text() == (
        tmp_path / "plain" / "history.csv"
    ).read_text()


def test_tensor_cache_serves_the_transformed_samples_only_without_augmentation() -> None:
    from medsweep.data.cache import TensorCache, tensor_cache
    from medsweep.data.datamodule import SeededSamples

    source = digits()
    plain = ImageDataset(source, np.arange(40), 1, ImageTransform(16, (0.5,), (0.5,)))
    served = tensor_cache(SeededSamples(plain))
    assert isinstance(served, TensorCache) and len(served) == 40
    for i in (0, 7, 39):
        x, y = served[(i, 12345)]
        want_x, want_y = plain[i]
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert np.array_equal(served.labels(), plain.labels())
    augmented = ImageDataset(source, np.arange(40), 1, _augmented(16, 1))
    assert tensor_cache(augmented) is augmented
    fresh = ImageDataset(source, np.arange(40), 1, ImageTransform(16, (0.5,), (0.5,)))
    assert tensor_cache(fresh, limit=10) is fresh  # larger than the limit
