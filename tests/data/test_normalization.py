"""data.normalization: auto / model take the backbone's statistics from timm's pretrained config."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from helpers import FAST, compose
from timm.data import resolve_model_data_config

from medsweep.data.transforms import normalization_stats, resolve_normalization
from medsweep.pipeline import build_datamodule


def _timm_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What timm itself reports for a built (random-weight) model of ``name``."""
    config = resolve_model_data_config(timm.create_model(name, pretrained=False))
    return tuple(config["mean"]), tuple(config["std"])


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_model_normalization_is_timms_pretrained_config(name):
    mean, std = normalization_stats(resolve_normalization("model", name), 3)
    expected_mean, expected_std = _timm_stats(name)
    assert np.allclose(mean, expected_mean) and np.allclose(std, expected_std)
    gray_mean, gray_std = normalization_stats(resolve_normalization("model", name), 1)
    assert gray_mean == pytest.approx((np.mean(expected_mean),))
    assert gray_std == pytest.approx((np.mean(expected_std),))


def test_resnet_and_vit_get_different_statistics():
    assert resolve_normalization("model", "resnet18") == "imagenet"
    assert resolve_normalization("model", "vit_tiny_patch16_224") == "half"  # 0.5 / 0.5
    clip = timm.models.get_pretrained_cfg("vit_base_patch16_clip_224.openai")
    resolved = resolve_normalization("model", "vit_base_patch16_clip_224.openai")
    assert resolved == (tuple(clip.mean), tuple(clip.std))  # CLIP's own, no named set


def test_auto_uses_the_model_only_when_it_is_pretrained():
    assert resolve_normalization("auto", "resnet18", pretrained=True) == "imagenet"
    assert resolve_normalization("auto", "vit_tiny_patch16_224", pretrained=True) == "half"
    assert resolve_normalization("auto", "resnet18", pretrained=False) == "half"
    assert resolve_normalization("auto", None, pretrained=True) == "half"  # small_cnn, mlp
    assert resolve_normalization("imagenet", "vit_tiny_patch16_224") == "imagenet"


def test_model_normalization_without_a_timm_backbone_names_the_key():
    with pytest.raises(ValueError, match="data.normalization=model needs a timm backbone"):
        resolve_normalization("model", None)


@pytest.mark.parametrize(
    ("model", "name"),
    [("resnet18", "resnet18"), ("vit_tiny", "vit_tiny_patch16_224")],
)
def test_pipeline_normalizes_with_the_pretrained_models_statistics(model, name, tmp_path):
    cfg = compose([*FAST, f"model={model}", "model.pretrained=true", "data.channels=3"], tmp_path)
    assert cfg.data.normalization == "auto"
    dm = build_datamodule(cfg)  # the network is not built: no weights are fetched
    transform = dm.datasets["train"].transform
    expected_mean, expected_std = _timm_stats(name)
    assert np.allclose(transform.mean.view(-1).numpy(), expected_mean)
    assert np.allclose(transform.std.view(-1).numpy(), expected_std)
    plain = build_datamodule(compose([*FAST, f"model={model}"], tmp_path / "plain"))
    assert np.allclose(plain.datasets["train"].transform.mean.view(-1).numpy(), 0.5)
