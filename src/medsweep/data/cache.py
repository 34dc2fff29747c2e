"""Decoded and resized images, computed once per (dataset content, image size, channels).

A run's transform starts with decode -> channels -> resize; for a set of files that is most of
the loader's work, repeated every epoch and every run of a sweep. ``cached_images`` does it once
and keeps the uint8 result: in memory for a small set (shared by the runs of one process), in a
memory-mapped file for a large one (shared by every process on the machine). The key is the
content of the source (the pixel array, or each file's bytes) with the size, the channels and the
decode options, so a changed file makes a new cache rather than a stale one.

``CachedSource`` serves the cached images where the source's ``image(i)`` was called; the
transform's own resize then meets an image of its size and leaves it as it is (a copy), so every
tensor, and every result, is the same as without the cache. ``image_cache`` is what the datamodule
calls with ``data.cache`` (``cache_mode`` resolves ``auto``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medsweep.data.filecache import FileCache, cache_file, file_key, user_cache_dir
from medsweep.data.options import CACHE_MODES
from medsweep.data.sources import ImageSource
from medsweep.data.transforms import to_channels

log = logging.getLogger(__name__)

VERSION = 1  # bump when the cached pixels would change (resize method, channel conversion)
MEMORY_LIMIT = 512 * 2**20  # bytes; larger sets are memory-mapped files
_IN_MEMORY: dict[str, np.ndarray] = {}  # key -> images, for the runs of this process


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def file_digests(paths: list[str], root: str | None = None) -> list[str]:
    """A content digest of each file, remembered (by size and mtime) in the dataset's file cache."""
    keys = {p: file_key(p) for p in paths}
    missing = [p for p, k in keys.items() if k is None]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {missing[:5]}")
    store = FileCache(cache_file(root))
    known = store.get("blake2b", keys)
    new = []
    for path in paths:
        if path not in known:
            known[path] = {"digest": _digest(Path(path).read_bytes())}
            new.append((path, keys[path], known[path]))
    store.put("blake2b", new)
    return [known[p]["digest"] for p in paths]


def source_key(source: ImageSource, image_size: int, channels: int) -> str:
    """The cache key: the source's pixels or files' content, the size, channels and decode options."""
    if source.images is not None:
        images = np.ascontiguousarray(source.images)
        content = _digest(f"{images.shape}{images.dtype.str}".encode(), images.tobytes())
    else:
        content = _digest("\n".join(file_digests(list(source.paths), source.root)).encode())
    settings = json.dumps(
        {"size": int(image_size), "channels": int(channels), "decode": source.decode, "v": VERSION},
        sort_keys=True,
        default=str,
    )
    return _digest(content.encode(), settings.encode())


def resize_like_transform(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """``image`` as the run's transform resizes it: (size, size, channels) uint8."""
    import albumentations as A

    out = A.Resize(image_size, image_size)(image=to_channels(image, channels))["image"]
    return out[:, :, None] if out.ndim == 2 else out


def cached_images(
    source: ImageSource,
    image_size: int,
    channels: int,
    folder: str | Path | None = None,
    memory_limit: float = MEMORY_LIMIT,
    threads: int = 1,
) -> np.ndarray:
    """Every image of ``source`` decoded, converted to ``channels`` and resized, as uint8 (N, S, S, C).

    Up to ``memory_limit`` bytes the array is kept in this process's memory; above, it is a
    read-only memory map of ``folder/images-<key>.npy`` (default ``$MEDSWEEP_CACHE/images``),
    written once (atomically) by the first process that needs it. ``threads`` decode at once
    while it is built (each image is a function of its file alone: the order does not matter).
    """
    key = source_key(source, image_size, channels)
    shape = (len(source), image_size, image_size, channels)
    nbytes = int(np.prod(shape))
    if nbytes <= memory_limit:
        if key in _IN_MEMORY:
            return _IN_MEMORY[key]
        images = _fill(np.empty(shape, dtype=np.uint8), source, image_size, channels, threads)
        images.setflags(write=False)
        _IN_MEMORY[key] = images
        return images
    folder = Path(folder) if folder else user_cache_dir() / "images"
    path = folder / f"images-{key}.npy"
    if not path.exists():  # complete when present: written under another name, then renamed
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(out, source, image_size, channels, threads)
        out.flush()
        del out
        os.replace(tmp, path)
        log.info("image cache: %d images at %d px written to %s", len(source), image_size, path)
    return np.load(path, mmap_mode="r")


def _fill(
    out: np.ndarray, source: ImageSource, image_size: int, channels: int, threads: int = 1
) -> np.ndarray:
    def one(i: int) -> None:
        out[i] = resize_like_transform(source.image(i), image_size, channels)

    if threads > 1:  # decoding and resizing release the GIL
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(one, range(len(source))):
                pass
    else:
        for i in range(len(source)):
            one(i)
    return out


class CachedSource:
    """``source`` with ``image(i)`` served from the cache of its resized images; all else is the
    source's own (labels, classes, paths, groups ...)."""

    def __init__(self, source: ImageSource, images: np.ndarray):
        if len(images) != len(source):
            raise ValueError(
                f"{source.name}: {len(images)} cached images for {len(source)} samples"
            )
        self.source = source
        self.images_cached = images

    def image(self, index: int) -> np.ndarray:
        """Cached image ``index``: uint8 (S, S, C)."""
        return self.images_cached[index]

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("source", "images_cached"):
            raise AttributeError(name)  # not yet set (unpickling): no delegation
        return getattr(self.source, name)

    def __getstate__(self) -> dict:
        # a memory map travels to loader workers as its file, not as a copy of its pixels
        images = self.images_cached
        if isinstance(images, np.memmap) and images.filename:
            return {"source": self.source, "file": images.filename}
        return {"source": self.source, "images": images}

    def __setstate__(self, state: dict) -> None:
        self.source = state["source"]
        self.images_cached = (
            np.load(state["file"], mmap_mode="r") if "file" in state else state["images"]
        )


def cached_source(
    source: ImageSource, image_size: int, channels: int, **kwargs: Any
) -> CachedSource:
    """``source`` whose images come from ``cached_images`` (built on first use)."""
    return CachedSource(source, cached_images(source, image_size, channels, **kwargs))


def cache_mode(
    mode: str, source: ImageSource, image_size: int, channels: int, memory_limit: int = MEMORY_LIMIT
) -> str:
    """``data.cache`` for ``source``: ``memory``, ``disk`` or ``none``.

    ``auto`` is ``none`` for pixels already held in memory (an npz, the digits: only the resize
    would be saved), ``memory`` for image files whose resized images fit in ``memory_limit``
    bytes, and ``disk`` for larger sets.
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"data.cache={mode!r} is not valid; choose one of {list(CACHE_MODES)}")
    if mode != "auto":
        return mode
    if source.images is not None:
        return "none"
    nbytes = len(source) * image_size * image_size * channels
    return "memory" if nbytes <= memory_limit else "disk"


def image_cache(
    source: ImageSource,
    image_size: int,
    channels: int,
    mode: str,
    folder: str | Path | None = None,
    threads: int = 1,
) -> ImageSource | CachedSource:
    """``source`` served from its cache of resized images kept in ``mode`` (memory | disk), or
    ``source`` itself for ``none``. The disk cache lives in ``folder`` (default
    ``$MEDSWEEP_CACHE/images``)."""
    if mode == "none":
        return source
    if mode not in ("memory", "disk"):
        raise ValueError(f"image cache mode {mode!r}: resolve it with cache_mode first")
    limit = math.inf if mode == "memory" else -1
    images = cached_images(
        source, image_size, channels, folder=folder, memory_limit=limit, threads=threads
    )
    log.info(
        "image cache (%s): %d images of %s at %d px", mode, len(source), source.name, image_size
    )
    return CachedSource(source, images)


TENSOR_LIMIT = 256 * 2**20  # bytes of float32 samples kept by ``tensor_cache``
_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ImageDataset -> (x, y)


class TensorCache(Dataset):
    """The samples of a dataset whose transform draws nothing at random (resize and normalize
    only), computed once and served from memory: what a plain loop's tensors are.

    Items are indices, or ``(index, seed)`` pairs when it stands for a seeded dataset (the seed
    then changes nothing). ``transform`` and ``labels()`` are the dataset's own.
    """

    def __init__(self, dataset: Dataset, x: torch.Tensor, y: torch.Tensor):
        self.dataset = dataset
        self.transform = dataset.transform
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def labels(self) -> np.ndarray:
        """Labels of the underlying part, in order."""
        return self.dataset.labels()

    def __getitem__(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        index = item[0] if isinstance(item, tuple) else item
        return self.x[index], self.y[index]


def _plain(dataset: Dataset):
    """The ImageDataset under a seeded wrapper, or the dataset itself."""
    return getattr(dataset, "dataset", dataset)


def tensor_cache(dataset: Dataset, limit: int = TENSOR_LIMIT) -> Dataset:
    """``dataset`` as a ``TensorCache`` when its transform is deterministic and its samples fit in
    ``limit`` bytes; otherwise ``dataset`` itself. Built once per dataset (fit, validate and test
    share it)."""
    base = _plain(dataset)
    transform = getattr(base, "transform", None)
    if not getattr(transform, "is_identity_augmentation", False) or len(base) == 0:
        return dataset
    if base not in _TENSORS:
        first_x, _ = base[0]
        if first_x.numel() * first_x.element_size() * len(base) > limit:
            return dataset
        xs, ys = zip(*(base[i] for i in range(len(base))))
        _TENSORS[base] = (torch.stack(xs), torch.stack(ys))
    x, y = _TENSORS[base]
    return TensorCache(dataset, x, y)
