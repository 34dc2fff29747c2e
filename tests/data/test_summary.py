"""``medsweep data-summary``: class counts per part, image formats, duplicates, sample grid."""

from __future__ import annotations

import json
import shutil

import numpy as np
from helpers import run_cli
from layouts import write_brain_mri
from PIL import Image


def test_data_summary_writes_markdown_png_and_counts(tmp_path):
    root = write_brain_mri(tmp_path / "mri")
    # one exact copy (kept together), one 16-bit grayscale image and one unreadable file
    shutil.copy(root / "Training/glioma/img000.jpg", root / "Training/glioma/copy.jpg")
    ramp = (500 + 3 * np.arange(256)).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(root / "Training/pituitary/deep.png")
    (root / "Training/notumor/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    out = tmp_path / "summary"
    result = run_cli(
        [
            "-m",
            "medsweep.cli",
            "data-summary",
            "data=brain_mri",
            f"data.source.root={root}",
            "data.on_bad=skip",
            "--out",
            str(out),
            "--per-class",
            "3",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    check = json.loads((out / "data_check.json").read_text())
    counts = check["class_counts"]
    assert counts["test"] == {"glioma": 2, "meningioma": 2, "notumor": 2, "pituitary": 2}
    train_val = {c: counts["train"][c] + counts["val"][c] for c in counts["train"]}
    assert train_val == {"glioma": 9, "meningioma": 8, "notumor": 8, "pituitary": 9}
    assert check["dropped"] == {"corrupt": 1}
    assert check["duplicates"]["clusters"] == 1 and check["duplicates"]["images"] == 2
    assert check["images"]["modes"] == {"RGB": 41, "I;16": 1}
    markdown = (out / "summary.md").read_text()
    assert "| glioma | " in markdown and "| corrupt | 1 |" in markdown
    assert "2 images in 1 clusters" in markdown and "| 16 | 1 |" in markdown
    grid = Image.open(out / "samples.png")
    assert grid.size[0] > 200 and grid.size[1] > 200
    # the grid is not blank: sample images were drawn into it
    assert np.asarray(grid.convert("L")).std() > 10


def test_data_summary_reports_a_failing_check(tmp_path):
    root = write_brain_mri(tmp_path / "mri")
    (root / "Training/glioma/img000.jpg").write_text("not an image")
    result = run_cli(
        ["-m", "medsweep.cli", "data-summary", "data=brain_mri", f"data.source.root={root}"],
        timeout=300,
    )
    assert result.returncode == 2
    assert "not an image (1)" in result.stderr and "img000.jpg" in result.stderr
