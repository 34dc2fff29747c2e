"""Models: timm and baseline backbones with heads, fine-tuning policies, weight averaging."""

from medsweep.models.ema import EMA
from medsweep.models.factory import Classifier, pixel_mlp, small_cnn, timm_classifier
from medsweep.models.finetune import (
    FrozenBackbone,
    ProgressiveUnfreezing,
    TwoPhaseUnfreezing,
    backbone_stages,
)

__all__ = [
    "EMA",
    "Classifier",
    "FrozenBackbone",
    "ProgressiveUnfreezing",
    "TwoPhaseUnfreezing",
    "backbone_stages",
    "pixel_mlp",
    "small_cnn",
    "timm_classifier",
]
