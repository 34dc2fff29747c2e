"""One uploaded file through a predictor: a clear message when it cannot be used, else its
probabilities, the decision at the chosen thresholds, notes and the Grad-CAM overlay."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medsweep.data.images import ImageReadError
from medsweep.predict import INPUT_EXTENSIONS, Predictor

DISPLAY_PX = 256


@dataclass
class UploadResult:
    """What the page shows for one upload (``error`` set: only the message)."""

    name: str
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    probs: np.ndarray | None = None
    called: list[str] = field(default_factory=list)
    verdict: str = ""
    image: np.ndarray | None = None
    overlay: np.ndarray | None = None


def explain_read_error(name: str, err: ImageReadError, max_pixels: int | None) -> str:
    """A sentence for the page about why ``name`` cannot be used."""
    detail = err.detail.replace(err.path, name) if err.detail else ""
    if err.reason == "not an image":
        return (
            f"{name} is not an image this model can read (PNG, JPEG, TIFF, BMP or DICOM)"
            + (f": {detail}" if detail else "")
            + "."
        )
    if err.reason == "too large":
        return (
            f"{name} is too large: {detail}. Downscale it, or start the app with a higher "
            f"--max-pixels (now {max_pixels:,})."
            if max_pixels
            else f"{name} is too large: {detail}."
        )
    if err.reason in ("corrupt", "truncated"):
        return f"{name} could not be decoded: the file is {err.reason}" + (
            f" ({detail})." if detail else "."
        )
    return f"{name} could not be read: {err.reason}" + (f" ({detail})." if detail else ".")


def display_copy(image: np.ndarray, size: int = DISPLAY_PX) -> np.ndarray:
    """An RGB uint8 copy for the page, enlarged (nearest) when smaller than ``size`` px."""
    from medsweep.evaluation.figures import display_image

    rgb = display_image(image)
    h, w = rgb.shape[:2]
    if max(h, w) >= size:
        return rgb
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(shape, Image.NEAREST))


def verdict(probs: np.ndarray, called: list[str], predictor: Predictor, thresholds) -> str:
    """The decision in one line, with the probability and threshold behind it."""
    classes, task = predictor.classes, predictor.task
    if task == "binary":
        positive, p = classes[1], float(probs[1])
        t = float(thresholds.get(positive, 0.5))
        sign = ">=" if p >= t else "<"
        return f"Predicted: {called[0]} (p({positive}) = {p:.3f} {sign} threshold {t:.3f})"
    if task == "multiclass" and not thresholds:
        j = classes.index(called[0])
        return f"Predicted: {called[0]} (probability {float(probs[j]):.3f}, the highest of {len(classes)})"
    shown = ", ".join(called) if called else "none"
    return (
        f"Predicted: {shown} (each {'label' if task == 'multilabel' else 'class'} at its threshold)"
    )


def cam_class(probs: np.ndarray, called: list[str], classes: list[str]) -> int:
    """The class Grad-CAM explains: the one called (the most probable when several or none)."""
    if len(called) == 1:
        return classes.index(called[0])
    return int(np.argmax(probs))


def analyse_upload(
    predictor: Predictor,
    name: str,
    data: bytes,
    thresholds: dict[str, float],
    tta: bool = False,
    cam: bool = True,
    max_pixels: int | None = None,
) -> UploadResult:
    """Read ``data`` (the bytes of file ``name``) as the run reads images and predict it."""
    result = UploadResult(name)
    if not data:
        result.error = f"{name} is empty (0 bytes)."
        return result
    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="medsweep-upload-") as folder:
        path = Path(folder) / ("upload" + (suffix if suffix in INPUT_EXTENSIONS else ""))
        path.write_bytes(data)
        try:
            image = predictor.read(path, max_pixels)
        except ImageReadError as err:
            err.path = str(path)
            result.error = explain_read_error(name, err, max_pixels)
            return result
    result.notes = image.notes
    probs = predictor.probabilities([image.array], tta)[0]
    called = predictor.decide(probs[None], thresholds)[0]
    result.probs, result.called = probs, called
    result.verdict = verdict(probs, called, predictor, thresholds)
    result.image = display_copy(image.array)
    if cam:
        from medsweep.evaluation.figures import overlay

        heat = predictor.cam(image.array, cam_class(probs, called, predictor.classes))
        if heat is None:
            result.notes.append("Grad-CAM is not available for this network")
        else:
            # the map upsampled smoothly onto the enlarged image
            result.overlay = overlay(result.image, heat)
    return result


def probability_rows(result: UploadResult, classes: list[str]) -> list[dict]:
    """``[{"class": ..., "probability": ...}]`` of a predicted upload, in class order."""
    if result.probs is None:
        return []
    return [
        {"class": c, "probability": float(p) if math.isfinite(p) else 0.0}
        for c, p in zip(classes, result.probs)
    ]
