"""Predictions for new image files from a trained run or a fold ensemble.

Each image goes through what the run's evaluation did to its own samples: the data source's
decoding (windows from the run's config), conversion to the run's channels, the evaluation
transform (resize, normalisation) and the best checkpoint's network (loaded weights-only by
``medsweep.evaluation.inference.load_run_model``). Decisions follow the thresholds that
``medsweep evaluate`` chose on validation (``eval/thresholds.json``: positive when probability
>= threshold; argmax for multiclass without them). A fold ensemble averages its members'
probabilities, each member through its own transform.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medsweep.data.images import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, ImageReadError, is_dicom
from medsweep.data.transforms import to_channels
from medsweep.predictions import PROB_PREFIX
from medsweep.results import METRICS_FILE, read_metrics

log = logging.getLogger(__name__)

INPUT_EXTENSIONS = IMAGE_EXTENSIONS + DICOM_EXTENSIONS
# larger images are refused before their pixels are decoded (a 10,000 x 10,000 scan is 100 MP)
DEFAULT_MAX_PIXELS = 100_000_000
GRAY_MODES = ("1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass
class Choice:
    """A model the user can pick: one run, or the fold ensemble of one configuration."""

    label: str
    kind: str
    run_dirs: list[Path]
    root: Path


@dataclass
class ImageInput:
    """One decoded image ready for prediction, with what was noticed while reading it."""

    name: str
    array: np.ndarray
    mode: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Predictor:
    """A run's (or a fold ensemble's) networks, transforms, classes and chosen thresholds."""

    choice: Choice
    members: list  # medsweep.evaluation.inference.RunModel, one per run
    task: str
    classes: list[str]
    thresholds: dict[str, float]
    threshold_info: dict | None
    eval_dir: Path | None
    records: list[dict]

    @property
    def channels(self) -> int:
        """Channels the networks read (1 or 3)."""
        return int(self.members[0].dm.channels)

    @property
    def decode_options(self) -> dict:
        """Keyword arguments of ``medsweep.data.images.decode`` from the run's data source."""
        return dict(getattr(self.members[0].dm.source, "decode", {}) or {})

    @property
    def trained_modes(self) -> dict[str, int]:
        """Image modes of the training data (from the run's data check), e.g. ``{"L": 120}``."""
        check = self.records[0].get("data_check") or {}
        return dict((check.get("images") or {}).get("modes") or {})

    def read(self, path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInput:
        """Decode ``path`` as the run's source would; raise ``ImageReadError`` naming why not."""
        array, facts = read_checked(path, self.decode_options, max_pixels)
        notes = channel_notes(array, facts["mode"], self.channels, self.trained_modes)
        return ImageInput(str(path), array, facts["mode"], notes)

    def probabilities(
        self, images: Sequence[np.ndarray], tta: bool = False, batch_size: int = 64
    ) -> np.ndarray:
        """(N, K) class probabilities of ``images`` (uint8 arrays), averaged over the members and,
        with ``tta``, over the evaluation's test-time views."""
        from medsweep.evaluation.inference import predict
        from medsweep.evaluation.settings import EvalSettings
        from medsweep.evaluation.tta import tta_views

        if not len(images):
            return np.zeros((0, len(self.classes)))
        settings = EvalSettings()
        views = (
            tta_views(settings.tta_flips, settings.tta_scales, settings.tta_crop_fraction)
            if tta
            else []
        )
        per_member = []
        for member in self.members:
            dataset = ArrayDataset(images, member.dm.channels, member.dm.datasets["val"].transform)
            mean, _ = predict(member.model, dataset, self.task, views, batch_size)
            per_member.append(mean)
        return np.mean(per_member, axis=0)

    def cam(self, image: np.ndarray, class_index: int) -> np.ndarray | None:
        """The Grad-CAM map (H, W in [0, 1], the network's input size) of ``class_index``, the
        members' maps averaged; None when the network has no layer to read it from."""
        from medsweep.evaluation.cam import cam_maps

        maps = []
        for member in self.members:
            transform = member.dm.datasets["val"].transform
            x = transform(to_channels(image, member.dm.channels))[None]
            try:
                maps.append(cam_maps(member.model, x, [class_index], self.task)[0])
            except (ValueError, AttributeError, RuntimeError) as err:
                log.warning("Grad-CAM unavailable: %s", err)
                return None
        return np.mean(maps, axis=0)

    def decide(
        self, probs: np.ndarray, thresholds: dict[str, float] | None = None
    ) -> list[list[str]]:
        """The classes called for each row of ``probs`` at ``thresholds`` (default: the run's)."""
        return decide(
            probs, self.task, self.classes, self.thresholds if thresholds is None else thresholds
        )

    def rule(self, thresholds: dict[str, float] | None = None) -> str:
        """The decision rule in words."""
        return decision_rule(
            self.task, self.classes, self.thresholds if thresholds is None else thresholds
        )


class ArrayDataset(Dataset):
    """uint8 images through a run's channel conversion and evaluation transform (target 0)."""

    def __init__(self, images: Sequence[np.ndarray], channels: int, transform):
        self.images, self.channels, self.transform = list(images), channels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(to_channels(self.images[i], self.channels)), 0


def decide(
    probs: np.ndarray, task: str, classes: Sequence[str], thresholds: dict[str, float]
) -> list[list[str]]:
    """Called classes per row: binary at the positive class's threshold (0.5 without one),
    multiclass by argmax (or one-vs-rest at per-class thresholds), multilabel per label."""
    from medsweep.evaluation.thresholds import decisions

    probs = np.asarray(probs, dtype=np.float64)
    if task == "binary":
        called = decisions(probs, task, classes, thresholds)[:, 0]
        return [[classes[int(c)]] for c in called]
    if task == "multiclass" and not thresholds:
        return [[classes[int(j)]] for j in probs.argmax(axis=1)]
    called = decisions(probs, task, classes, thresholds)
    return [[c for c, hit in zip(classes, row) if hit] for row in called]


def decision_rule(task: str, classes: Sequence[str], thresholds: dict[str, float]) -> str:
    """The rule ``decide`` applies, in words."""
    if task == "binary":
        t = thresholds.get(classes[1], 0.5)
        return f"{classes[1]} when p({classes[1]}) >= {t:.4g}, else {classes[0]}"
    if task == "multiclass" and not thresholds:
        return "the class of highest probability (argmax)"
    parts = ", ".join(f"{c} >= {thresholds.get(c, 0.5):.4g}" for c in classes)
    kind = "class" if task == "multiclass" else "label"
    return f"each {kind} called when its probability reaches its threshold ({parts})"


def image_dimensions(path: str | Path) -> tuple[int, int] | None:
    """(width, height) read from the file's header without decoding pixels; None when unknown."""
    from PIL import Image

    if is_dicom(path):
        try:
            import pydicom

            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # an unreadable header: decoding reports the reason
            return None
        rows, cols = header.get("Rows"), header.get("Columns")
        return (int(cols), int(rows)) if rows and cols else None
    try:
        with Image.open(path) as image:
            return image.size
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, "too large", str(err)) from None
    except Exception:  # not an image PIL knows: decoding reports the reason
        return None


def read_checked(
    path: str | Path, decode_options: dict | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, dict]:
    """Decode ``path`` (uint8 array and facts) after checking its size against ``max_pixels``."""
    from medsweep.data.images import decode

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(
            path, "missing file", "no such file" if not path.exists() else "a folder"
        )
    size = image_dimensions(path)
    if size is not None and max_pixels and size[0] * size[1] > max_pixels:
        w, h = size
        raise ImageReadError(
            path, "too large", f"{w} x {h} = {w * h:,} pixels; the limit is {max_pixels:,}"
        )
    return decode(path, **(decode_options or {}))


def _is_colour(array: np.ndarray) -> bool:
    if array.ndim == 2 or array.shape[-1] == 1:
        return False
    rgb = array[..., :3]
    return not (
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def _mode_kind(mode: str) -> str:
    if mode in GRAY_MODES or mode.startswith("DICOM MONOCHROME"):
        return "grayscale"
    return "colour"


def channel_notes(
    array: np.ndarray, mode: str, channels: int, trained_modes: dict[str, int] | None = None
) -> list[str]:
    """What differs between an image and the model's training images, and how it was converted."""
    notes = []
    if mode in ALPHA_MODES:
        notes.append(
            f"the image has transparency ({mode}): transparent parts were composited over black"
        )
    colour = _is_colour(array)
    kinds = {_mode_kind(m) for m in trained_modes or {}}
    trained = ", ".join(trained_modes or {}) or None
    if channels == 1 and colour:
        notes.append(
            f"a colour image ({mode}) for a model that reads one channel: converted to gray"
            + (f"; it was trained on {trained} images" if trained else "")
        )
    elif kinds == {"grayscale"} and colour:
        notes.append(
            f"the model was trained on grayscale images ({trained}); this image is colour ({mode})"
        )
    elif kinds == {"colour"} and not colour:
        notes.append(
            f"the model was trained on colour images ({trained}); this image is grayscale "
            f"({mode}): its gray value is repeated in each of the {channels} channels"
        )
    return notes


def run_choices(path: str | Path) -> list[Choice]:
    """The models under ``path``: each ok run, then one fold ensemble per configuration with
    several ok folds (grouped as ``medsweep evaluate`` groups them)."""
    from medsweep.report.collect import find_run_dirs

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if (root / METRICS_FILE).is_file():
        dirs = [root]
    else:
        dirs = [
            d for d in find_run_dirs(root, exclude=[root / "eval"]) if (d / METRICS_FILE).is_file()
        ]
    runs: list[Choice] = []
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for run_dir in dirs:
        try:
            record = read_metrics(run_dir)
        except (OSError, ValueError):
            continue
        if record.get("status") != "ok" or (record.get("paths") or {}).get("checkpoint") is None:
            continue
        name = run_dir.name if run_dir == root else run_dir.relative_to(root).as_posix()
        runs.append(Choice(f"run {name}", "run", [run_dir], root))
        key = record.get("config_hash") or record.get("config_key") or run_dir.name
        groups.setdefault(key, []).append((run_dir, record))
    ensembles = []
    for members in groups.values():
        if len(members) < 2:
            continue
        folds = sorted(int(r.get("fold") or 0) for _, r in members)
        name = members[0][1].get("config_key") or "default"
        label = f"ensemble {name} (folds {', '.join(map(str, folds))})"
        ensembles.append(Choice(label, "ensemble", [d for d, _ in members], root))
    return ensembles + runs


def ensemble_eval_dir(choice: Choice) -> Path | None:
    """The folder ``medsweep evaluate`` wrote for this ensemble (``<root>/eval/ensemble_*``)."""
    wanted = {str(d.resolve()) for d in choice.run_dirs}
    names = {d.name for d in choice.run_dirs}
    for summary in sorted((choice.root / "eval").glob("ensemble_*/summary.json")):
        try:
            runs = json.loads(summary.read_text()).get("runs") or []
        except (OSError, ValueError):
            continue
        if {str(Path(r).resolve()) for r in runs} == wanted or {
            Path(r).name for r in runs
        } == names:
            return summary.parent
    return None


def load_predictor(choice: Choice | str | Path) -> Predictor:
    """Rebuild the networks and transforms of a run (a folder) or an ensemble (a ``Choice``)."""
    from medsweep.checkpoints import load_checkpoint
    from medsweep.evaluation.inference import load_run_model

    if not isinstance(choice, Choice):
        run_dir = Path(choice)
        choice = Choice(f"run {run_dir.name}", "run", [run_dir], run_dir)
    records = [read_metrics(d) for d in choice.run_dirs]
    for run_dir, record in zip(choice.run_dirs, records):
        if record.get("status") != "ok":
            raise ValueError(f"{run_dir}: status {record.get('status')!r}; only ok runs predict")
    for run_dir, record in zip(choice.run_dirs, records):
        # refused here, with a message naming the file, unless it holds only tensors and values
        name = (record.get("paths") or {}).get("checkpoint") or "checkpoints/best.ckpt"
        load_checkpoint(run_dir / name, "checkpoint", mmap=True)
    members = [load_run_model(d) for d in choice.run_dirs]
    task, classes = members[0].task, members[0].classes
    for run_dir, member in zip(choice.run_dirs[1:], members[1:]):
        if member.task != task or member.classes != classes:
            raise ValueError(f"{run_dir}: task or classes differ from {choice.run_dirs[0]}")
    eval_dir = choice.run_dirs[0] / "eval" if choice.kind == "run" else ensemble_eval_dir(choice)
    info = None
    if eval_dir is not None and (eval_dir / "thresholds.json").is_file():
        info = json.loads((eval_dir / "thresholds.json").read_text())
        info["file"] = str(eval_dir / "thresholds.json")
    if eval_dir is not None and not eval_dir.is_dir():
        eval_dir = None
    thresholds = {str(k): float(v) for k, v in ((info or {}).get("thresholds") or {}).items()}
    return Predictor(choice, members, task, classes, thresholds, info, eval_dir, records)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named, and the image and DICOM files in folders named (recursively, sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in INPUT_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
        else:
            files.append(path)
    return files


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    predictor: Predictor,
    files: Sequence[str | Path],
    tta: bool = False,
    batch_size: int = 64,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """One row per file: status (ok | error), the error, notes, the class probabilities and the
    called classes at the run's thresholds. An unreadable file gets its error row; the rest go on."""
    rows: list[dict] = []
    for chunk in _chunks(list(files), batch_size):
        ready: list[tuple[int, ImageInput]] = []
        for path in chunk:
            row = {"file": str(path), "status": "ok", "error": "", "note": ""}
            try:
                image = predictor.read(path, max_pixels)
            except ImageReadError as err:
                row.update(
                    status="error",
                    error=f"{err.reason}" + (f": {err.detail}" if err.detail else ""),
                )
            else:
                row["note"] = "; ".join(image.notes)
                ready.append((len(rows), image))
            rows.append(row)
        if ready:
            probs = predictor.probabilities([im.array for _, im in ready], tta, batch_size)
            called = predictor.decide(probs)
            for (at, _), p, c in zip(ready, probs, called):
                for name, value in zip(predictor.classes, p):
                    rows[at][f"{PROB_PREFIX}{name}"] = float(value)
                rows[at]["predicted"] = "+".join(c) if c else "none"
    columns = ["file", "status", "predicted", *(f"{PROB_PREFIX}{c}" for c in predictor.classes)]
    frame = pd.DataFrame(rows, columns=[*columns, "error", "note"])
    frame["predicted"] = frame["predicted"].fillna("")
    return frame


def confidence(
    probs: np.ndarray, task: str, called: Sequence[str], classes: Sequence[str]
) -> float:
    """The probability behind a single-class decision (binary, multiclass); NaN otherwise."""
    if task == "multilabel" or len(called) != 1:
        return math.nan
    return float(probs[list(classes).index(called[0])])


def select_choice(choices: Sequence[Choice], config: str | None = None) -> Choice:
    """The fold ensemble of configuration ``config`` (a config key), the only ensemble, or the
    only run; a ``ValueError`` listing the models otherwise."""
    if not choices:
        raise ValueError("no finished run (metrics.json with status ok and a checkpoint) found")
    ensembles = [c for c in choices if c.kind == "ensemble"]
    if config is not None:
        for c in ensembles:
            if c.label.startswith(f"ensemble {config} (folds"):
                return c
        for c in choices:
            if c.kind == "run" and c.label == f"run {config}":
                return c
        raise ValueError(
            f"--model {config!r} is not one of: " + "; ".join(_model_key(c) for c in choices)
        )
    if len(ensembles) == 1:
        return ensembles[0]
    if len(choices) == 1:
        return choices[0]
    raise ValueError(
        "several models here; choose one with --model: " + "; ".join(_model_key(c) for c in choices)
    )


def _model_key(choice: Choice) -> str:
    if choice.kind == "ensemble":
        return choice.label.removeprefix("ensemble ").rsplit(" (folds", 1)[0]
    return choice.label.removeprefix("run ")


def run_predict(args, console) -> int:
    """The ``medsweep predict`` command: predict ``args.inputs`` with ``args.run``, write the CSV."""
    from rich.console import Console
    from rich.text import Text

    errors = Console(stderr=True)
    try:
        choice = select_choice(run_choices(args.run), args.model)
        predictor = load_predictor(choice)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        errors.print(Text.assemble(("error: ", "bold red"), str(err)))
        return 2
    files = expand_inputs(args.inputs)
    if not files:
        errors.print(Text.assemble(("error: ", "bold red"), "no image files in the inputs"))
        return 2
    frame = predict_files(predictor, files, args.tta, args.batch_size, args.max_pixels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.9g")
    ok = int((frame["status"] == "ok").sum())
    source = (predictor.threshold_info or {}).get("file") or "none (medsweep evaluate not run)"
    console.print(Text(f"{choice.label}: {predictor.task}, classes {', '.join(predictor.classes)}"))
    console.print(Text(f"decision: {predictor.rule()} (thresholds: {source})"))
    console.print(Text(f"{ok} of {len(frame)} files predicted -> {out}", style="bold green"))
    for _, row in frame[frame["status"] != "ok"].iterrows():
        errors.print(Text(f"  {row['file']}: {row['error']}", style="red"))
    return 0 if ok else 1
