"""Models: timm and baseline backbones with heads."""

from medsweep.models.factory import Classifier, pixel_mlp, small_cnn, timm_classifier

__all__ = ["Classifier", "pixel_mlp", "small_cnn", "timm_classifier"]
