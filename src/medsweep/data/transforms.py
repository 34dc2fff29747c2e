"""Per-image transforms: resize, albumentations and MONAI augmentation, normalization."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch

from medsweep.data.options import NORMALIZATIONS

log = logging.getLogger(__name__)

# auto: the backbone's own statistics when it loads pretrained weights, half otherwise;
# model: the statistics in timm's pretrained config of the backbone (ImageNet, Inception's 0.5, CLIP's, ...)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED_STATS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3)}

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def pretrained_stats(name: str) -> Stats:
    """Mean and std in timm's pretrained config of ``name`` (a timm name, optionally ``.tag``).

    Read from timm's registry through ``resolve_data_config``; the network is not built.
    """
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise ValueError(f"data.normalization=model: {name!r} is not a timm model")
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(
            f"data.normalization=model: timm has no pretrained config for {name!r}; "
            f"choose one of {[k for k in NORMALIZATIONS if k not in ('auto', 'model')]}"
        )
    data_cfg = resolve_data_config(pretrained_cfg=cfg.to_dict())
    return tuple(float(v) for v in data_cfg["mean"]), tuple(float(v) for v in data_cfg["std"])


def resolve_normalization(
    kind: str, backbone: str | None = None, pretrained: bool = False
) -> str | Stats:
    """``data.normalization`` with ``auto`` and ``model`` replaced by a named set or (mean, std).

    ``model`` takes the statistics of timm's pretrained config for ``backbone``; ``auto`` does so
    when ``pretrained`` is true and ``backbone`` is a timm model, and is ``half`` otherwise. Statistics
    equal to a named set come back as its name (``imagenet``, ``half``).
    """
    if kind not in ("auto", "model"):
        return kind
    import timm

    is_timm = isinstance(backbone, str) and timm.is_model(backbone)
    if kind == "auto" and not (pretrained and is_timm):
        return "half"
    if not is_timm:
        raise ValueError(
            f"data.normalization=model needs a timm backbone (model.name), not {backbone!r}; "
            f"choose one of {[k for k in NORMALIZATIONS if k != 'model']}"
        )
    stats = pretrained_stats(backbone)
    named = next((k for k, v in NAMED_STATS.items() if np.allclose(v, stats, atol=1e-6)), None)
    log.info(
        "data.normalization=%s: mean %s, std %s from timm's pretrained config of %s",
        kind,
        stats[0],
        stats[1],
        backbone,
    )
    return named or stats


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return ``image`` as (H, W, channels) uint8: gray replicated to RGB, RGB averaged to gray."""
    if image.ndim == 2:
        image = image[:, :, None]
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 1 and have >= 3:
        gray = image[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[:, :, None]
    if channels == 3 and have == 4:
        return image[:, :, :3]
    raise ValueError(f"cannot turn an image with {have} channels into data.channels={channels}")


def normalization_stats(
    kind: str | Stats, channels: int, images: np.ndarray | None = None
) -> Stats:
    """Per-channel mean and std in [0, 1] units for ``data.normalization`` (a name or (mean, std)).

    RGB statistics on 1-channel images are averaged over the three channels.
    """
    if kind == "auto":  # no backbone known here: resolve_normalization picks the model's
        kind = "half"
    if kind == "model":
        raise ValueError(
            "data.normalization=model needs the backbone's name: resolve_normalization(kind, name)"
        )
    if isinstance(kind, str) and kind in NAMED_STATS:
        kind = NAMED_STATS[kind]
    if not isinstance(kind, str):
        mean, std = (tuple(float(v) for v in part) for part in kind)
        if len(mean) == channels:
            return mean, std
        return (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
    if kind == "dataset":
        if images is None:
            raise ValueError("data.normalization=dataset needs the training images")
        pixels = images.reshape(-1, channels).astype(np.float64) / 255.0
        std = np.maximum(pixels.std(0), 1e-6)
        return tuple(pixels.mean(0).tolist()), tuple(std.tolist())
    raise ValueError(
        f"data.normalization={kind!r} is not valid; choose one of {list(NORMALIZATIONS)}"
    )


class ImageTransform:
    """uint8 (H, W, C) image -> normalized float tensor (C, size, size).

    Order: resize, albumentations ops (on uint8 HWC), scale to [0, 1] CHW, MONAI ops, normalize.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        albumentations: Sequence = (),
        monai: Sequence = (),
        seed: int | None = None,
    ):
        self.spatial = A.Compose([A.Resize(image_size, image_size), *albumentations])
        self.monai = list(monai)
        self._monai_random = np.random.RandomState()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.reseed(seed)

    @property
    def is_identity_augmentation(self) -> bool:
        """True when only resizing and normalization are applied."""
        return len(self.spatial.transforms) == 1 and not self.monai

    def reseed(self, seed: int | None) -> None:
        """Seed every random op from ``seed`` (``None``: leave them as they are).

        The albumentations ops share one numpy and one python stream and the MONAI ops one numpy
        stream, so that ops draw independently (a per-op seed would make, e.g., two flips of
        equal probability always fire together).
        """
        if seed is None:
            return
        streams = np.random.SeedSequence(int(seed) % 2**64).generate_state(3)
        numpy_seed, python_seed, monai_seed = (int(s) for s in streams)
        self.spatial.set_random_state(np.random.default_rng(numpy_seed), random.Random(python_seed))
        self._monai_random.seed(monai_seed)
        for op in self.monai:
            if hasattr(op, "set_random_state"):
                op.set_random_state(state=self._monai_random)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        out = self.spatial(image=image)["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float().div_(255.0)
        for op in self.monai:
            x = op(x)
        # MONAI returns MetaTensors; plain tensors collate and train without overhead
        if self.monai:
            from monai.utils import convert_to_tensor  # imported only by runs with MONAI ops

            x = convert_to_tensor(x, dtype=torch.float32, track_meta=False)
        return (x - self.mean) / self.std
