"""Rebuild a run's network and data from its folder, and predict probabilities (for TTA, Grad-CAM)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from medsweep.module import probabilities
from medsweep.results import CONFIG_FILE, read_metrics

View = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class RunModel:
    """A run's network (eval mode, best checkpoint's weights), its config and rebuilt data."""

    model: torch.nn.Module
    cfg: DictConfig
    dm: object
    task: str
    classes: list[str]

    def dataset(self, index: np.ndarray):
        """The samples ``index`` of the data source through the evaluation transform."""
        from medsweep.data.datamodule import ImageDataset

        plain = self.dm.datasets["test"].transform
        return ImageDataset(self.dm.source, np.asarray(index), self.dm.channels, plain)

    def raw_image(self, index: int) -> np.ndarray:
        """The stored image of one sample (uint8 H x W x C), before any transform."""
        return np.asarray(self.dm.source.image(int(index)))


def load_run_model(run_dir: str | Path) -> RunModel:
    """Rebuild data and network from ``config.yaml`` and load ``checkpoints/best.ckpt`` weights."""
    from medsweep.pipeline import build_datamodule, build_model

    run_dir = Path(run_dir)
    record = read_metrics(run_dir)
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    with open_dict(cfg):
        cfg.data.num_workers = 0
        if "pretrained" in cfg.model:
            cfg.model.pretrained = False  # the checkpoint holds the weights: nothing to download
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{run_dir}: a scikit-learn baseline has no network to re-run")
    checkpoint = (record.get("paths") or {}).get("checkpoint") or "checkpoints/best.ckpt"
    path = run_dir / checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    model.eval()
    return RunModel(model, cfg, dm, record["task"], list(record["classes"]))


def class_columns(probs: torch.Tensor, task: str) -> torch.Tensor:
    """(B, K) probabilities: binary (B,) positive probabilities become two columns."""
    if task == "binary":
        positive = probs.reshape(-1)
        return torch.stack([1 - positive, positive], dim=1)
    return probs


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset,
    task: str,
    views: Sequence[View] = (),
    batch_size: int = 64,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Probabilities (N, K) averaged over ``views`` (identity when empty), and those of each view."""
    views = list(views) or [("identity", lambda x: x)]
    model.eval()
    per_view: dict[str, list[np.ndarray]] = {name: [] for name, _ in views}
    for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        for name, fn in views:
            logits = model(fn(images))
            per_view[name].append(class_columns(probabilities(logits, task), task).double().numpy())
    stacked = {name: np.concatenate(chunks) for name, chunks in per_view.items()}
    return np.mean(list(stacked.values()), axis=0), stacked
