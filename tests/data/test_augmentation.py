"""Augmentation presets: each composes, changes 1- and 3-channel images, keeps shape and dtype, is seeded."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, conf_options, run
from hydra.utils import instantiate
from sklearn.datasets import load_digits

from medsweep.data.transforms import ImageTransform
from medsweep.pipeline import compose_config

SIZE = 32
PRESETS = conf_options("augmentation")


def images(channels: int, n: int = 8) -> np.ndarray:
    """uint8 (n, 8, 8, channels) digits; the 3-channel copy has distinct channels (a color image)."""
    gray = np.clip(load_digits().images[:n] * 16, 0, 255).astype(np.uint8)
    if channels == 1:
        return gray[..., None]
    return np.stack([gray, 255 - gray, np.roll(gray, 2, axis=2)], axis=-1)


@cache
def preset_config(preset: str):
    """``augmentation=<preset>`` composed with the real configs (once per preset: Hydra is slow)."""
    return compose_config([f"augmentation={preset}", f"data.image_size={SIZE}"]).augmentation


def preset_transform(preset: str, channels: int, seed: int | None = 0) -> ImageTransform:
    """The training transform the pipeline builds for ``augmentation=<preset>``: fresh ops each call."""
    aug = preset_config(preset)
    return ImageTransform(
        SIZE,
        (0.5,) * channels,
        (0.25,) * channels,
        [instantiate(op) for op in aug.albumentations or []],
        [instantiate(op) for op in aug.monai or []],
        seed=seed,
    )


def apply(transform: ImageTransform, batch: np.ndarray) -> torch.Tensor:
    return torch.stack([transform(image) for image in batch])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_changes_images_and_keeps_shape_and_dtype(preset: str, channels: int) -> None:
    batch = images(channels)
    transform = preset_transform(preset, channels)
    out = apply(transform, batch)
    plain = apply(ImageTransform(SIZE, (0.5,) * channels, (0.25,) * channels), batch)
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert out.shape == (len(batch), channels, SIZE, SIZE)
    assert torch.isfinite(out).all()
    uint8 = transform.spatial(image=batch[0])["image"]  # the albumentations stage: uint8 HWC
    assert uint8.dtype == np.uint8 and uint8.shape[:2] == (SIZE, SIZE)
    assert (uint8.shape[2] if uint8.ndim == 3 else 1) == channels
    changed = [not torch.equal(a, b) for a, b in zip(out, plain, strict=True)]
    if preset == "none":
        assert transform.is_identity_augmentation
        torch.testing.assert_close(out, plain, rtol=0, atol=0)
    else:
        assert not transform.is_identity_augmentation
        assert sum(changed) >= 2, (
            f"augmentation={preset} changed {sum(changed)} of {len(batch)} images"
        )


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_preset_is_deterministic_for_a_seed(preset: str) -> None:
    batch = images(3)
    first = apply(preset_transform(preset, 3, seed=5), batch)
    again = apply(preset_transform(preset, 3, seed=5), batch)
    other = apply(preset_transform(preset, 3, seed=6), batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_random_resized_crop_follows_the_image_size() -> None:
    for preset in ("distortion", "dermoscopy"):
        aug = compose_config([f"augmentation={preset}", "data.image_size=48"]).augmentation
        crop = next(op for op in aug.albumentations if op._target_.endswith("RandomResizedCrop"))
        assert instantiate(crop).size == (48, 48)


def test_monai_preset_trains_end_to_end(tmp_path: Path) -> None:
    # MONAI ops return MetaTensors; the transform hands plain tensors to the loader and model
    assert run([*FAST, "augmentation=monai_spatial"], tmp_path)["status"] == "ok"
