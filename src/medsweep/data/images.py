"""Image decoding: a file (PNG, JPEG, TIFF, BMP, DICOM) -> uint8 (H, W) or (H, W, 3), converted explicitly.

Every PIL mode has a stated rule: 8-bit gray and RGB pass through; bilevel becomes gray; palette
images are expanded through their palette; alpha is composited over black; 16-bit, 32-bit and
float images are scaled linearly from a declared window, or else from the image's own
minimum..maximum, onto 0..255 (never clipped at 255 as an 8-bit cast would). DICOM slices get
RescaleSlope/Intercept applied, then one window per output channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
HIGH_DEPTH_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
# CT windows as (centre, width) in Hounsfield units: the three-channel stack used for head CT
BRAIN_WINDOW = (40.0, 80.0)
SUBDURAL_WINDOW = (80.0, 200.0)
BONE_WINDOW = (600.0, 2800.0)
HEAD_CT_WINDOWS = (BRAIN_WINDOW, SUBDURAL_WINDOW, BONE_WINDOW)


class ImageReadError(Exception):
    """A file that cannot be used as an image; ``reason`` is a short category for counting."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def scale_to_uint8(array: np.ndarray, window: Sequence[float] | None = None) -> np.ndarray:
    """Map ``window`` = (low, high), or the array's own (min, max), linearly onto 0..255."""
    values = np.asarray(array, dtype=np.float64)
    if window is None:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    else:
        low, high = (float(window[0]), float(window[1]))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def apply_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A CT window: ``centre - width/2 .. centre + width/2`` mapped linearly onto 0..255."""
    return scale_to_uint8(values, (centre - width / 2.0, centre + width / 2.0))


def _composite_over_black(array: np.ndarray) -> np.ndarray:
    color, alpha = array[..., :-1].astype(np.float64), array[..., -1:].astype(np.float64) / 255.0
    out = np.rint(color * alpha).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def pil_to_array(image, window: Sequence[float] | None = None) -> np.ndarray:
    """A decoded PIL image as uint8 (H, W) or (H, W, 3) by the module's per-mode rules."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in HIGH_DEPTH_MODES:
        return scale_to_uint8(np.asarray(image), window)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
        if mode == "RGB":
            return np.asarray(image)
    if mode in ("RGBA", "LA", "RGBa", "La"):
        if mode in ("RGBa", "La"):
            image = image.convert(mode[0:-1] + "A")
        return _composite_over_black(np.asarray(image))
    return np.asarray(image.convert("RGB"))


def bit_depth(mode: str) -> int:
    """Bits per sample of a PIL mode (1 for bilevel, 16 for I;16, 32 for I and F, else 8)."""
    return 1 if mode == "1" else HIGH_DEPTH_MODES.get(mode, 8)


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the DICM marker at byte 128."""
    if str(path).lower().endswith(DICOM_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_values(dataset) -> np.ndarray:
    """Stored pixels with RescaleSlope and RescaleIntercept applied (Hounsfield units for CT)."""
    pixels = dataset.pixel_array.astype(np.float64)
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def dicom_to_array(dataset, windows: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """A DICOM slice as uint8: one window per channel (1 or 3), or its own value range."""
    if int(dataset.get("SamplesPerPixel", 1)) == 3:  # colour: 8-bit as stored, else its range
        pixels = dataset.pixel_array
        return pixels if pixels.dtype == np.uint8 else scale_to_uint8(pixels)
    values = dicom_values(dataset)
    if values.ndim != 2:
        raise ValueError(f"expected one 2D slice, got pixel data of shape {values.shape}")
    if windows:
        channels = [apply_window(values, float(c), float(w)) for c, w in windows]
        out = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    else:
        out = scale_to_uint8(values)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


def _read_dicom(path: Path, windows):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
        return dataset, dicom_to_array(dataset, windows)
    except FileNotFoundError:
        raise ImageReadError(path, "missing file") from None
    except InvalidDicomError as exc:
        raise ImageReadError(path, "not an image", str(exc)) from None
    except (EOFError, ValueError, AttributeError, KeyError, OSError, TypeError) as exc:
        text = str(exc)
        reason = (
            "truncated"
            if any(k in text for k in ("less than expected", "buffer", "EOF", "end of file"))
            else "corrupt"
        )
        raise ImageReadError(path, reason, f"{type(exc).__name__}: {text}") from None


def read_image(
    path: str | Path,
    window: Sequence[float] | None = None,
    dicom_windows: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """Decode ``path`` fully to uint8 (H, W) or (H, W, 3); raise ``ImageReadError`` naming why not."""
    return decode(path, window, dicom_windows)[0]


def decode(
    path: str | Path,
    window: Sequence[float] | None = None,
    dicom_windows: Sequence[Sequence[float]] | None = None,
) -> tuple[np.ndarray, dict]:
    """Decode ``path``; return (uint8 array, facts: width, height, mode, bits, raw_hash, blank)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if is_dicom(path):
        dataset, array = _read_dicom(path, dicom_windows)
        raw = dataset.pixel_array
        mode = f"DICOM {dataset.get('PhotometricInterpretation', '')}".strip()
        bits = int(dataset.get("BitsStored", raw.dtype.itemsize * 8))
    else:
        try:
            with Image.open(path) as image:
                image.load()
                raw = np.asarray(image)
                mode, bits = image.mode, bit_depth(image.mode)
                array = pil_to_array(image, window)
        except FileNotFoundError:
            raise ImageReadError(path, "missing file") from None
        except UnidentifiedImageError:
            kind = _signature(path)
            if kind:
                detail = f"starts like a {kind} file but its header cannot be read"
                raise ImageReadError(path, "corrupt", detail) from None
            raise ImageReadError(path, "not an image", "no image format recognises it") from None
        except (OSError, SyntaxError, ValueError) as exc:
            reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            raise ImageReadError(path, reason, str(exc)) from None
    facts = {
        "height": int(raw.shape[0]),
        "width": int(raw.shape[1]),
        "mode": mode,
        "bits": bits,
        "hash": content_hash(raw),
        "blank": bool(raw.size == 0 or raw.min() == raw.max()),
    }
    return array, facts


SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"GIF8": "GIF",
}


def _signature(path: Path) -> str | None:
    """The image format whose magic bytes ``path`` starts with, if any."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    return next((kind for magic, kind in SIGNATURES.items() if head.startswith(magic)), None)


def content_hash(array: np.ndarray) -> str:
    """A digest of an array's shape, type and values: equal for pixel-identical images."""
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
