"""Report figures: training curves of a run and fold scores per configuration (matplotlib, Agg)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from medsweep.report.configs import label_of

log = logging.getLogger(__name__)

# boxplot's ``vert`` became ``orientation`` in matplotlib 3.10.
_HORIZONTAL = (
    {"orientation": "horizontal"}
    if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)
_TRAIN_STYLE = {"color": "tab:blue", "marker": ".", "label": "train"}
_VAL_STYLE = {"color": "tab:orange", "marker": ".", "label": "val"}


def _save(fig: Figure, out: Path, dpi: int = 110) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # figures made without pyplot need a canvas; Agg keeps global state alone
    fig.savefig(out, dpi=dpi)  # constrained layout already fits the labels
    return out


def read_history(path: str | Path) -> pd.DataFrame:
    """Read a history.csv into one row per epoch (last logged value of each column)."""
    history = pd.read_csv(path)
    if history.empty:
        return history
    if "epoch" not in history:
        history.insert(0, "epoch", range(len(history)))
    history = history.dropna(subset=["epoch"])
    history = history.apply(pd.to_numeric, errors="coerce")
    # Loggers write train and val metrics of one epoch on different rows; merge them.
    return history.groupby("epoch", sort=True).last().reset_index()


def _first_column(history: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in history and history[n].notna().any()), None)


def _curve_metric(history: pd.DataFrame, monitor: str | None) -> str | None:
    """Name (without split) of the metric drawn beside the loss: the monitored one if usable."""
    if monitor:
        name = monitor.split("/", 1)[-1]
        if name != "loss" and _first_column(history, [f"val/{name}", f"train/{name}"]):
            return name
    for column in history.columns:
        split, _, name = str(column).partition("/")
        headline = split == "val" and name and name != "loss" and "/" not in name
        if headline and history[column].notna().any():
            return name
    return None


def plot_history(
    history_csv: str | Path,
    out: str | Path,
    monitor: str | None = None,
    best_epoch: int | None = None,
    title: str | None = None,
) -> Path | None:
    """Draw loss and the monitored metric, train vs val, per epoch; None when nothing to draw."""
    history = read_history(history_csv)
    if history.empty:
        log.warning("%s: empty history, no curves drawn", history_csv)
        return None
    panels = [("loss", ["train/loss", "train/loss_epoch"], ["val/loss"])]
    name = _curve_metric(history, monitor)
    if name:
        panels.append((name, [f"train/{name}", f"train/{name}_epoch"], [f"val/{name}"]))
    drawn = [
        (label, _first_column(history, train), _first_column(history, val))
        for label, train, val in panels
    ]
    drawn = [d for d in drawn if d[1] or d[2]]
    if not drawn:
        log.warning("%s: no train/val columns to draw", history_csv)
        return None
    fig = Figure(figsize=(5.0 * len(drawn), 3.6), layout="constrained")
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (label, train_col, val_col) in zip(axes, drawn, strict=True):
        for column, style in ((train_col, _TRAIN_STYLE), (val_col, _VAL_STYLE)):
            if column:
                series = history[["epoch", column]].dropna()
                ax.plot(series["epoch"], series[column], **style)
        if best_epoch is not None and not pd.isna(best_epoch):
            ax.axvline(int(best_epoch), color="grey", linestyle="--", linewidth=1, label="best")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return _save(fig, Path(out))


def plot_fold_scores(
    runs: pd.DataFrame,
    metric: str,
    out: str | Path,
    order: Sequence[str] | None = None,
    baseline: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path | None:
    """Draw a box and strip plot of the fold scores of each configuration on ``metric``."""
    ok = runs[runs["status"] == "ok"]
    if metric not in ok:
        return None
    order = list(order) if order is not None else list(dict.fromkeys(ok["config_key"]))
    data = [ok.loc[ok["config_key"] == key, metric].dropna().to_numpy(float) for key in order]
    if not any(len(d) for d in data):
        log.warning("no %s scores to draw", metric)
        return None
    ticks = []
    for key in order:
        label = label_of(key, labels)
        label = label if len(label) <= 60 else label[:57] + "..."
        ticks.append(label + ("  [baseline]" if baseline is not None and key == baseline else ""))
    fig = Figure(figsize=(8.0, 1.0 + 0.45 * len(order)), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(order))[::-1]  # best (first) configuration on top
    boxed = [(d, p) for d, p in zip(data, positions, strict=True) if len(d)]
    ax.boxplot(
        [d for d, _ in boxed],
        positions=[p for _, p in boxed],
        **_HORIZONTAL,
        widths=0.5,
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
        medianprops={"color": "tab:orange"},
        flierprops={"marker": ""},
    )
    jitter = np.random.default_rng(0)
    for values, position in zip(data, positions, strict=True):
        offsets = jitter.uniform(-0.12, 0.12, size=len(values))
        ax.scatter(values, position + offsets, s=18, color="tab:blue", alpha=0.8, zorder=3)
    ax.set_yticks(positions, ticks)
    ax.set_xlabel(metric)
    ax.set_title(f"{metric} per fold", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, Path(out))
