"""Test helpers: compose the real configs, run the real pipeline, make tiny on-disk datasets."""

from __future__ import annotations

import os

# one intra-op thread per test process, set before numpy/torch load: tiny models gain nothing from
# more, and on a busy 2-core machine extra threads spin against each other (24 s -> 3 s for one test)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MEDSWEEP_CACHE", str(ROOT / ".pytest_cache" / "medsweep"))

# tiny and fast: a 16 px small CNN, one batch per stage, no progress bar
FAST = [
    "trainer=debug",
    "data.image_size=16",
    "data.batch_size=16",
    "model=small_cnn",
    "callbacks.progress_bar=null",
]

# each task on the built-in digits, with a loss that fits it
TASK_OVERRIDES = {
    "multiclass": ["data=digits", "loss=ce"],
    "binary": ["data=digits_binary", "loss=bce"],
    "multilabel": ["data=digits_multilabel", "loss=bce"],
}


def bare_trainer(**kwargs):
    """A Lightning Trainer on the CPU without logger, checkpoints, progress bar or model summary;
    ``kwargs`` add to or override these."""
    import lightning as L

    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**settings, **kwargs})


def conf_options(group: str) -> list[str]:
    """Every option file of a config group (so a new file is tested automatically)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(overrides: list[str], output_dir: Path):
    """The composed run config, writing into ``output_dir``."""
    from medsweep.pipeline import compose_config

    return compose_config([*overrides, f"paths.output_dir={output_dir}"], CONF)


def run(overrides: list[str], output_dir: Path) -> dict:
    """Compose and train; return the metrics.json record."""
    from medsweep.pipeline import train

    return train(compose(overrides, output_dir))


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (or another script) as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def digit_images(n_per_class: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_per_class`` digits of each of the first ``classes`` classes, uint8 8x8."""
    bunch = load_digits()
    keep = np.concatenate([np.flatnonzero(bunch.target == c)[:n_per_class] for c in range(classes)])
    images = np.clip(bunch.images[keep] * 16, 0, 255).astype(np.uint8)
    return images, bunch.target[keep].astype(np.int64)


def write_npz(path: Path, n_per_class: int = 20, classes: int = 3) -> Path:
    """A MedMNIST-format file with train/val/test parts."""
    images, labels = digit_images(n_per_class, classes)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    cut = [int(len(labels) * 0.6), int(len(labels) * 0.8)]
    parts = dict(zip(("train", "val", "test"), np.split(np.arange(len(labels)), cut)))
    arrays = {}
    for name, idx in parts.items():
        arrays[f"{name}_images"] = images[idx]
        arrays[f"{name}_labels"] = labels[idx][:, None]
    np.savez(path, **arrays)
    return path


def write_image_folder(root: Path, n_per_class: int = 12, classes: int = 3) -> Path:
    """root/<class>/<i>.png"""
    images, labels = digit_images(n_per_class, classes)
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / f"digit{y}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    return root


def write_csv(root: Path, n_per_class: int = 12, classes: int = 3) -> Path:
    """images/<i>.png and manifest.csv with image, label and patient columns."""
    images, labels = digit_images(n_per_class, classes)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,label,patient"]
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,digit{y},p{i // 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def read_wandb_records(path: Path) -> list:
    """Decode a W&B ``.wandb`` transaction log (leveldb-style 32 KiB blocks) into protobuf Records."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B log"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if pos + 7 + length > len(raw):  # a record still being written
            break
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += data
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_logged_values(path: Path, wait_s: float = 60.0) -> dict[str, list]:
    """Every value logged to the history of an offline W&B run, by key.

    W&B's service process writes the log after ``wandb.finish()`` returns; wait for its exit record.
    """
    import time

    deadline = time.monotonic() + wait_s
    records = read_wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {wait_s} s")
        time.sleep(0.5)
        records = read_wandb_records(path)
    values: dict[str, list] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                values.setdefault(key, []).append(json.loads(item.value_json))
    return values


# Debian's chromium (installed by .ci/run), launched by Playwright without a browser download
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM_MISSING = (
    "/usr/bin/chromium is absent (apt-get install -y chromium); the browser test is skipped"
)
