"""data.cache: a run decodes each image file once, gets the same tensors and results, and keeps
the disk cache out of its run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, compose, run, write_image_folder
from PIL import Image

import medsweep.data.cache as cache_module
import medsweep.data.images as images_module
from medsweep.data.cache import (
    CachedSource,
    cache_mode,
    cached_images,
    resize_like_transform,
    source_key,
)
from medsweep.data.datamodule import ImageDataModule, SeededSamples
from medsweep.data.folds import Holdout
from medsweep.data.sources import digits, image_folder
from medsweep.pipeline import build_datamodule

SIZE = 16


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch) -> Path:
    """$MEDSWEEP_CACHE of this test alone."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("MEDSWEEP_CACHE", str(home))
    return home


def _folder_overrides(root: Path, cache: str) -> list[str]:
    return [
        *FAST,
        "data=imagefolder",
        f"data.source.root={root}",
        "data.channels=1",
        "data.num_workers=0",
        "augmentation=basic",
        f"data.cache={cache}",
    ]


def test_auto_mode_follows_where_the_pixels_are(tmp_path: Path) -> None:
    files = image_folder(str(write_image_folder(tmp_path / "folder", n_per_class=4)))
    assert cache_mode("auto", digits(), 32, 1) == "none"  # already in memory
    assert cache_mode("auto", files, 32, 3) == "memory"
    # 12 images of 32 x 32 x 3 bytes = 36,864 bytes: above a smaller limit they go to disk
    assert cache_mode("auto", files, 32, 3, memory_limit=36_864) == "memory"
    assert cache_mode("auto", files, 32, 3, memory_limit=36_863) == "disk"
    for mode in ("memory", "disk", "none"):
        assert cache_mode(mode, digits(), 32, 1) == mode
    with pytest.raises(ValueError, match="data.cache='ram'"):
        cache_mode("ram", files, 32, 1)


def _datamodule(root: Path, cache: str, **kwargs) -> ImageDataModule:
    import albumentations as A

    dm = ImageDataModule(
        image_folder(str(root)),
        Holdout(seed=0),
        image_size=SIZE,
        channels=1,
        batch_size=8,
        train_albumentations=[A.HorizontalFlip(p=0.5), A.Rotate(limit=20, p=0.7)],
        seed=3,
        cache=cache,
        **kwargs,
    )
    dm.setup()
    return dm


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cached_and_uncached_datamodules_give_the_same_tensors(
    tmp_path: Path, cache_home: Path, cache: str
) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=6)
    plain, cached = _datamodule(root, "none"), _datamodule(root, cache)
    epochs = {}
    for name, dm in (("plain", plain), ("cached", cached)):
        loader = dm.train_dataloader()
        epochs[name] = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            epochs[name].append([(x.clone(), y.clone()) for x, y in loader])
        dm.val_dataloader()
    assert isinstance(cached.datasets["train"].source, CachedSource)
    assert not isinstance(plain.datasets["train"].source, CachedSource)
    for a, b in zip(epochs["plain"], epochs["cached"], strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for part in ("train", "val", "test"):
        for i in range(len(plain.datasets[part])):
            xa, ya = plain.datasets[part][i]
            xb, yb = cached.datasets[part][i]
            assert torch.equal(xa, xb) and torch.equal(ya, yb), (part, i)
    # the same sample, augmented from the same seed
    x_plain, _ = SeededSamples(plain.datasets["train"])[(4, 12345)]
    x_cached, _ = SeededSamples(cached.datasets["train"])[(4, 12345)]
    assert torch.equal(x_plain, x_cached)
    npy = sorted(cache_home.rglob("*.npy"))
    assert len(npy) == (1 if cache == "disk" else 0)


def test_each_image_file_is_decoded_once_per_run(tmp_path: Path, monkeypatch) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=6)
    reads: list[str] = []
    real = images_module.read_image

    def counting(path, **kwargs):
        reads.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(images_module, "read_image", counting)
    # a fresh in-memory store: other tests of this process may have cached the same pixels
    monkeypatch.setattr(cache_module, "_IN_MEMORY", {})
    counts = {}
    for cache in ("none", "memory"):
        dm = _datamodule(root, cache, cache_dir=tmp_path / "unused")
        reads.clear()
        loader = dm.train_dataloader()
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            for _ in loader:
                pass
        counts[cache] = len(reads), len(set(reads)), len(dm.datasets["train"]), len(dm.source)
    reads_none, distinct_none, n_train, _ = counts["none"]
    assert (reads_none, distinct_none) == (3 * n_train, n_train)  # every epoch decodes again
    reads_memory, distinct_memory, _, n_all = counts["memory"]
    assert reads_memory == distinct_memory == n_all  # each file once, while the cache is built


def test_runs_with_and_without_the_cache_give_the_same_results(
    tmp_path: Path, cache_home: Path
) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=8)
    extra = ["trainer=cpu", "trainer.max_epochs=2", "+trainer.limit_train_batches=2"]
    records = {
        cache: run([*_folder_overrides(root, cache), *extra], tmp_path / cache)
        for cache in ("none", "memory", "disk")
    }
    histories = {c: (tmp_path / c / "history.csv").read_text() for c in records}
    for cache in ("memory", "disk"):
        assert records[cache]["data"]["loader"]["cache"] == cache
        assert records[cache]["val"] == records["none"]["val"]
        assert records[cache]["test"] == records["none"]["test"]
        assert records[cache]["best_epoch"] == records["none"]["best_epoch"]
        assert histories[cache] == histories["none"]
    # the disk cache is one file in $MEDSWEEP_CACHE/images, named by the files' content key
    key = source_key(image_folder(str(root)), SIZE, 1)
    assert sorted(p.name for p in cache_home.rglob("*.npy")) == [f"images-{key}.npy"]
    assert (cache_home / "images" / f"images-{key}.npy").is_file()
    for cache in records:
        assert not list((tmp_path / cache).rglob("*.npy"))


def test_the_cache_folder_cannot_be_inside_the_run_folder(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=8)
    run_dir = tmp_path / "run"
    cfg = compose([*_folder_overrides(root, "disk")], run_dir)
    dm = build_datamodule(cfg, run_dir)
    dm.cache_dir = run_dir / "cache"
    with pytest.raises(ValueError, match="inside the run folder"):
        dm.train_dataloader()
    assert not list(run_dir.rglob("*.npy"))


def test_a_changed_file_is_decoded_again(tmp_path: Path, cache_home: Path) -> None:
    root = write_image_folder(tmp_path / "folder", n_per_class=8)
    first = _datamodule(root, "disk")
    first.train_dataloader()
    before = {p.name for p in cache_home.rglob("*.npy")}
    assert len(before) == 1
    index = int(first.splits.val[0])
    path = Path(first.source.paths[index])
    old = first.datasets["val"].source.image(index).copy()

    pixels = np.asarray(Image.open(path)).copy()
    pixels[:4] = 255 - pixels[:4]
    Image.fromarray(pixels).save(path)
    second = _datamodule(root, "disk")
    second.train_dataloader()
    after = {p.name for p in cache_home.rglob("*.npy")}
    assert len(after) == 2 and before < after  # a new key, a new file; the old one untouched
    new = second.datasets["val"].source.image(index)
    want = resize_like_transform(np.asarray(Image.open(path))[:, :, None], SIZE, 1)
    assert np.array_equal(new, want) and not np.array_equal(new, old)
    others = [i for i in range(len(second.source)) if i != index]
    cached_new = second.datasets["val"].source.images_cached
    cached_old = first.datasets["val"].source.images_cached
    assert np.array_equal(cached_new[others], cached_old[others])


def test_threads_build_the_same_cache(tmp_path: Path) -> None:
    source = image_folder(str(write_image_folder(tmp_path / "folder", n_per_class=5)))
    one = cached_images(source, SIZE, 3, folder=tmp_path / "one", memory_limit=-1, threads=1)
    four = cached_images(source, SIZE, 3, folder=tmp_path / "four", memory_limit=-1, threads=4)
    assert one.shape == (15, SIZE, SIZE, 3)
    want = np.stack([resize_like_transform(source.image(i), SIZE, 3) for i in range(15)])
    assert np.array_equal(one, want) and np.array_equal(four, want)
