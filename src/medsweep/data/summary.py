"""A dataset's summary: class counts per part, image formats, duplicates, left-out files, samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsweep.data.datamodule import ImageDataModule


def class_counts(dm: ImageDataModule) -> dict[str, dict[str, int]]:
    """Samples (positives, for multi-label data) of each class in each part, after setup."""
    counts = {}
    for part, indices in dm.splits.parts().items():
        labels = dm.source.labels[indices]
        if labels.ndim == 2:
            per_class = labels.sum(0) if len(labels) else np.zeros(len(dm.classes))
        else:
            per_class = np.bincount(labels, minlength=len(dm.classes))
        counts[part] = {c: int(n) for c, n in zip(dm.classes, per_class)}
    return counts


def sample_grid(
    dm: ImageDataModule, path: Path, per_class: int = 6, seed: int = 0, max_classes: int = 40
) -> Path:
    """A PNG with up to ``per_class`` images of each class (rows; the first ``max_classes``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    labels = dm.source.labels
    rows = min(len(dm.classes), max_classes)
    fig, axes = plt.subplots(
        rows, per_class, figsize=(1.3 * per_class, 1.3 * rows + 0.3), squeeze=False
    )
    for r, name in enumerate(dm.classes[:rows]):
        members = np.flatnonzero(labels[:, r] > 0 if labels.ndim == 2 else labels == r)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(chosen):
                image = dm.source.image(int(chosen[c]))
                gray = image.ndim == 2 or image.shape[-1] == 1
                ax.imshow(image.squeeze(), cmap="gray" if gray else None, vmin=0, vmax=255)
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    shown = "" if rows == len(dm.classes) else f" (first {rows} of {len(dm.classes)} classes)"
    fig.suptitle(f"{dm.source.name}: samples per class{shown}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def write_summary(dm: ImageDataModule, out: Path, per_class: int = 6) -> dict[str, Path]:
    """Write ``summary.md``, ``samples.png`` and ``data_check.json`` for a set-up datamodule."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check = dm.data_check
    counts = class_counts(dm)
    files = {
        "samples": sample_grid(dm, out / "samples.png", per_class),
        "data_check": out / "data_check.json",
        "markdown": out / "summary.md",
    }
    files["data_check"].write_text(json.dumps({**check, "class_counts": counts}, indent=2))
    parts = list(counts)
    lines = [
        f"# Data summary: {dm.source.name}",
        "",
        f"{check['n_kept']} usable samples of {check['n_listed']} listed; task {dm.task}; "
        f"{len(dm.classes)} classes; data.on_bad={check['policy']}.",
        "",
        "## Classes per part",
        "",
        *_table(
            ["class", *parts, "total"],
            [
                [c, *(counts[p][c] for p in parts), sum(counts[p][c] for p in parts)]
                for c in dm.classes
            ]
            + [
                [
                    "**all**",
                    *(len(dm.splits.parts()[p]) for p in parts),
                    sum(len(v) for v in dm.splits.parts().values()),
                ]
            ],
        ),
        "",
        "## Images",
        "",
        *_table(["mode", "images"], list(check["images"]["modes"].items())),
        "",
        *_table(["bits per sample", "images"], list(check["images"]["bits"].items())),
        "",
        *_table(["size (W x H)", "images"], list(check["images"]["sizes"].items())),
        "",
        f"{check['images']['n_sizes']} distinct sizes (the 10 most common shown).",
        "",
        "## Duplicates",
        "",
        f"{check['duplicates']['images']} images in {check['duplicates']['clusters']} clusters "
        "of identical pixels, each kept in one part (joined into one group); "
        f"{check['duplicates']['cross_part']} across predefined parts and "
        f"{check['duplicates']['conflicting']} with contradicting labels.",
        "",
        "## Left out",
        "",
    ]
    if check["dropped"]:
        lines += _table(["reason", "samples"], list(check["dropped"].items()))
        lines += [
            "",
            *_table(
                ["item", "reason", "detail"],
                [[f"`{d['item']}`", d["reason"], d["detail"]] for d in check["dropped_items"]],
            ),
        ]
    else:
        lines.append("Nothing: every listed sample is usable.")
    if check["empty_classes_dropped"]:
        lines += ["", f"Empty classes dropped: {check['empty_classes_dropped']}."]
    lines += ["", "## Samples", "", f"![samples per class]({files['samples'].name})", ""]
    files["markdown"].write_text("\n".join(lines))
    return files
