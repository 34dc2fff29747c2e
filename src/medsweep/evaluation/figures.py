"""Evaluation figures (matplotlib, Agg): curves, confusion matrices, reliability diagrams,
ensemble gains, and image thumbnails with Grad-CAM overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def _save(fig: Figure, out: Path, dpi: int = 110) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=dpi)
    return out


def plot_curves(curve_data: dict, out: Path, title: str = "") -> Path:
    """ROC and precision-recall curves side by side (per class, micro and macro averages)."""
    fig = Figure(figsize=(9, 4), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    for name, points in curve_data["roc"].items():
        style = {"linestyle": "--", "linewidth": 2} if name in ("micro", "macro") else {}
        roc_ax.plot(points["fpr"], points["tpr"], label=f"{name} ({points['auc']:.3f})", **style)
    roc_ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8)
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (AUROC)")
    for name, points in curve_data["pr"].items():
        style = {"linestyle": "--", "linewidth": 2} if name in ("micro", "macro") else {}
        pr_ax.plot(
            points["recall"], points["precision"], label=f"{name} ({points['ap']:.3f})", **style
        )
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (AP)", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_confusion(
    counts: pd.DataFrame, normalised: pd.DataFrame, out: Path, title: str = ""
) -> Path:
    """Counts and row-normalised confusion matrix as two heatmaps."""
    k = len(counts)
    size = min(3 + 0.45 * k, 9)
    fig = Figure(figsize=(2 * size, size), layout="constrained")
    for ax, matrix, fmt, name in zip(
        fig.subplots(1, 2), (counts, normalised), ("{:d}", "{:.2f}"), ("counts", "row-normalised")
    ):
        values = matrix.to_numpy()
        ax.imshow(normalised.to_numpy(), cmap="Blues", vmin=0, vmax=1)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    v = int(values[i, j]) if fmt == "{:d}" else float(values[i, j])
                    colour = "white" if normalised.to_numpy()[i, j] > 0.6 else "black"
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(
            range(k), [str(c) for c in matrix.columns], rotation=45, ha="right", fontsize=7
        )
        ax.set_yticks(range(k), [str(c) for c in matrix.index], fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=name)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_reliability(bins: dict[str, pd.DataFrame], out: Path, xlabel: str) -> Path:
    """Reliability diagram: observed frequency against mean confidence per bin, for each variant."""
    fig = Figure(figsize=(4.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, label="perfect")
    for name, table in bins.items():
        shown = table[table["count"] > 0]
        ax.plot(shown["confidence"], shown["observed"], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_gain(table: pd.DataFrame, out: Path) -> Path:
    """Ensemble gain over the mean single fold with its bootstrap CI, per metric."""
    fig = Figure(figsize=(5, 0.5 + 0.4 * len(table)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))
    err = np.array([table["gain"] - table["gain_ci_low"], table["gain_ci_high"] - table["gain"]])
    ax.errorbar(table["gain"], y, xerr=np.clip(err, 0, None), fmt="o", capsize=3)
    ax.axvline(0, color="0.5", linewidth=0.8)
    ax.set_yticks(y, table["metric"])
    ax.set(xlabel="ensemble − mean of folds (95% CI)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out)


def display_image(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) array -> uint8 RGB for display (min-max scaled per image when not uint8)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A Grad-CAM map in [0, 1] over the image (pytorch-grad-cam's colour map)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = display_image(image).astype(np.float32) / 255.0
    if cam.shape != rgb.shape[:2]:
        cam = (
            np.asarray(
                Image.fromarray((cam * 255).astype(np.uint8)).resize(
                    rgb.shape[1::-1], Image.BILINEAR
                )
            ).astype(np.float32)
            / 255.0
        )
    return show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=0.55)


def save_thumbnail(panels: Sequence[np.ndarray], out: Path, size: int = 96) -> Path:
    """Image panels (RGB uint8) side by side, each scaled to ``size`` px (nearest), as a PNG."""
    tiles = [Image.fromarray(display_image(p)).resize((size, size), Image.NEAREST) for p in panels]
    canvas = Image.new("RGB", (size * len(tiles) + 4 * (len(tiles) - 1), size), "white")
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (size + 4), 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
