"""Grad-CAM (pytorch-grad-cam): target layer found from the model's last feature stage."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

METHODS = ("gradcam", "gradcam++", "eigencam")


def _cam_class(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}
    if method not in classes:
        raise ValueError(f"eval.cam.method={method!r}; choose one of {', '.join(METHODS)}")
    return classes[method]


def _tokens_to_grid(prefix: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        tokens = tensor[:, prefix:, :]
        side = int(math.isqrt(tokens.shape[1]))
        grid = tokens.reshape(tokens.shape[0], side, side, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return reshape


def _nhwc_to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


def _backbone(model: nn.Module) -> tuple[str, nn.Module]:
    backbone = getattr(model, "backbone", None)
    return ("backbone.", backbone) if isinstance(backbone, nn.Module) else ("", model)


def find_target_layer(
    model: nn.Module, layer: str | None = None
) -> tuple[str, nn.Module, Callable | None]:
    """Name, module and reshape transform of the layer Grad-CAM reads.

    ``layer`` (a dotted name in ``model``) overrides. Otherwise: ViT-style token models (timm
    ``blocks`` with prefix tokens) use the last block's first norm and a token-to-grid reshape;
    Swin (NHWC stages) its last block's first norm and an NHWC-to-NCHW permute; other timm models
    the module of their last ``feature_info`` entry; baselines their last ``stages`` entry; else the
    last Conv2d.
    """
    prefix, backbone = _backbone(model)
    reshape = None
    if hasattr(backbone, "num_prefix_tokens") and hasattr(backbone, "blocks"):
        reshape = _tokens_to_grid(int(backbone.num_prefix_tokens))
    elif type(backbone).__name__.startswith("SwinTransformer"):
        reshape = _nhwc_to_nchw
    if layer:
        return layer, model.get_submodule(layer), reshape
    if hasattr(backbone, "num_prefix_tokens") and hasattr(backbone, "blocks"):
        name = f"blocks.{len(backbone.blocks) - 1}.norm1"
    elif reshape is _nhwc_to_nchw:
        last = backbone.layers[-1]
        name = f"layers.{len(backbone.layers) - 1}.blocks.{len(last.blocks) - 1}.norm1"
    elif getattr(backbone, "feature_info", None):
        info = backbone.feature_info
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        name = entries[-1]["module"]
    elif isinstance(getattr(backbone, "stages", None), nn.Sequential) and any(
        isinstance(m, nn.Conv2d) for m in backbone.stages.modules()
    ):
        name = f"stages.{len(backbone.stages) - 1}"
    else:
        convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(
                "no convolution or token block to read Grad-CAM from; set eval.cam.layer=<module>"
            )
        name = convs[-1]
    return prefix + name, backbone.get_submodule(name), reshape


class LogitTarget:
    """The score Grad-CAM explains: logit ``column`` (sign -1: the negative class of a binary
    model's single logit)."""

    def __init__(self, column: int, sign: float = 1.0):
        self.column, self.sign = column, sign

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.sign * output[..., self.column]


def target_for(class_index: int, task: str) -> LogitTarget:
    """The logit that stands for ``class_index``: binary models have one (the positive class)."""
    if task == "binary":
        return LogitTarget(0, 1.0 if class_index == 1 else -1.0)
    return LogitTarget(class_index)


def cam_maps(
    model: nn.Module,
    images: torch.Tensor,
    class_indices: Sequence[int],
    task: str,
    method: str = "gradcam",
    layer: str | None = None,
) -> np.ndarray:
    """(N, H, W) maps in [0, 1] at the input's size, one per image for its class in ``class_indices``."""
    cam_class = _cam_class(method)
    _, module, reshape = find_target_layer(model, layer)
    model.eval()
    targets = [target_for(int(c), task) for c in class_indices]
    with (
        torch.enable_grad(),
        cam_class(model=model, target_layers=[module], reshape_transform=reshape) as cam,
    ):
        maps = cam(input_tensor=images, targets=targets)
    return np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float32)), 0.0, 1.0)
