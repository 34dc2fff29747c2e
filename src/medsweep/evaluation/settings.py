"""Evaluation settings: the ``eval`` node of conf/evaluate.yaml as a plain dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class EvalSettings:
    """What ``evaluate`` computes and how (see conf/evaluate.yaml for each field)."""

    threshold_method: str = "max_f1"
    target_recall: float = 0.95
    per_class: bool = False
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    n_bins: int = 10
    tta: bool = True
    tta_flips: list[str] = field(default_factory=lambda: ["horizontal"])
    tta_scales: list[float] = field(default_factory=list)
    tta_crop_fraction: float | None = None
    cam: bool = True
    cam_method: str = "gradcam"
    cam_layer: str | None = None
    top_k: int = 4
    thumbnails: bool = True
    batch_size: int = 64
    wandb: bool = True

    @classmethod
    def from_config(cls, node: Any) -> EvalSettings:
        """Settings from the ``eval`` node (a DictConfig or dict)."""
        from omegaconf import DictConfig, OmegaConf

        data = (
            OmegaConf.to_container(node, resolve=True)
            if isinstance(node, DictConfig)
            else dict(node or {})
        )
        _check_keys(data)
        flat = {
            "threshold_method": data.get("threshold", {}).get("method"),
            "target_recall": data.get("threshold", {}).get("target_recall"),
            "per_class": data.get("threshold", {}).get("per_class"),
            "n_boot": data.get("bootstrap", {}).get("n"),
            "confidence": data.get("bootstrap", {}).get("confidence"),
            "seed": data.get("bootstrap", {}).get("seed"),
            "n_bins": data.get("calibration", {}).get("n_bins"),
            "tta": data.get("tta", {}).get("enabled"),
            "tta_flips": data.get("tta", {}).get("flips"),
            "tta_scales": data.get("tta", {}).get("scales"),
            "tta_crop_fraction": data.get("tta", {}).get("crop_fraction"),
            "cam": data.get("cam", {}).get("enabled"),
            "cam_method": data.get("cam", {}).get("method"),
            "cam_layer": data.get("cam", {}).get("layer"),
            "top_k": data.get("top_k"),
            "thumbnails": data.get("thumbnails"),
            "batch_size": data.get("batch_size"),
            "wandb": data.get("wandb"),
        }
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in flat.items() if k in known and v is not None})


# the eval node's layout: section -> its fields (None: a plain field)
LAYOUT: dict[str, tuple[str, ...] | None] = {
    "threshold": ("method", "target_recall", "per_class"),
    "bootstrap": ("n", "confidence", "seed"),
    "calibration": ("n_bins",),
    "tta": ("enabled", "flips", "scales", "crop_fraction"),
    "cam": ("enabled", "method", "layer"),
    "top_k": None,
    "thumbnails": None,
    "batch_size": None,
    "wandb": None,
}
CHOICES = {
    ("threshold", "method"): ("max_f1", "youden", "target_recall"),
    ("cam", "method"): ("gradcam", "gradcam++", "eigencam"),
}


def _check_keys(data: dict[str, Any]) -> None:
    """Refuse a misspelt or unknown ``eval.*`` key, or a method that does not exist."""
    import difflib

    problems = []
    for key, value in data.items():
        if key not in LAYOUT:
            close = difflib.get_close_matches(key, list(LAYOUT), n=1)
            hint = f" (did you mean eval.{close[0]}?)" if close else ""
            problems.append(f"eval.{key} is not a setting{hint}; valid: {sorted(LAYOUT)}")
            continue
        allowed = LAYOUT[key]
        if allowed is None or not isinstance(value, dict):
            continue
        for sub, subvalue in value.items():
            if sub not in allowed:
                problems.append(f"eval.{key}.{sub} is not a setting; valid: {list(allowed)}")
            elif (key, sub) in CHOICES and subvalue not in CHOICES[(key, sub)]:
                problems.append(
                    f"eval.{key}.{sub}={subvalue!r} is not valid; choose one of "
                    f"{list(CHOICES[(key, sub)])}"
                )
    if problems:
        raise ValueError("; ".join(problems))
