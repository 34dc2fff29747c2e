"""The pre-flight check: every unusable sample named before training, or skipped and counted."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from helpers import FAST, compose, digit_images, run
from PIL import Image

from medsweep.data.datamodule import ImageDataModule
from medsweep.data.filecache import FileCache
from medsweep.data.folds import Holdout, KFold
from medsweep.data.preflight import DataCheckError, check_source, inspect_files
from medsweep.data.sources import csv_manifest, image_folder, npz


def _save_digits(folder, names, labels_wanted, start=0):
    images, labels = digit_images(12, 3)
    written = []
    for k, name in enumerate(names):
        image = images[labels == labels_wanted[k]][(start + k) % 12]
        Image.fromarray(np.kron(image, np.ones((2, 2), np.uint8))).save(folder / name)
        written.append(name)
    return written


def bad_csv_set(root):
    """A manifest with split column and every kind of unusable entry (the issue's list)."""
    images = root / "images"
    images.mkdir(parents=True)
    rows = ["image,label,split"]
    for k in range(8):
        for cls, digit in (("a", 0), ("b", 1)):
            name = f"{cls}{k}.png"
            _save_digits(images, [name], [digit], start=k)
            rows.append(f"images/{name},{cls},train")
    for k in range(3):
        for cls, digit in (("a", 0), ("b", 1)):
            name = f"{cls}_test{k}.png"
            _save_digits(images, [name], [digit], start=8 + k)
            rows.append(f"images/{name},{cls},test")
    # truncated PNG
    _save_digits(images, ["trunc.png"], [2])
    raw = (images / "trunc.png").read_bytes()
    (images / "trunc.png").write_bytes(raw[: len(raw) // 2])
    rows.append("images/trunc.png,a,train")
    # a text file named .jpg
    (images / "notes.jpg").write_text("this is not an image\n")
    rows.append("images/notes.jpg,b,train")
    # a missing file
    rows.append("images/gone.png,a,train")
    # an unknown label
    _save_digits(images, ["typo.png"], [2], start=5)
    rows.append("images/typo.png,bb,train")
    # a 16-bit image with a narrow range (kept: scaled by its own range)
    ramp = (1000 + 7 * np.arange(256)).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(images / "deep16.png")
    rows.append("images/deep16.png,a,train")
    # the same pixels in train and test
    shutil.copy(images / "b0.png", images / "b0_copy.png")
    rows.append("images/b0_copy.png,b,test")
    # the same row twice
    rows.append(rows[1])
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv", ramp


def _csv_overrides(manifest, policy):
    return [
        *FAST,
        "data=csv",
        f"data.source.path={manifest}",
        "data.source.split_column=split",
        "data.classes=[a,b,c]",
        f"data.on_bad={policy}",
        "data.num_workers=0",
        "data.channels=1",
    ]


EXPECTED_REASONS = {
    "trunc.png": "truncated",
    "notes.jpg": "not an image",
    "gone.png": "missing file",
    "typo.png": "unknown label",
    "b0_copy.png": "cross-part duplicate",
}


def test_bad_set_fails_before_training_naming_every_problem(tmp_path):
    manifest, _ = bad_csv_set(tmp_path / "data")
    with pytest.raises(DataCheckError) as caught:
        run(_csv_overrides(manifest, "error"), tmp_path / "run")
    message = str(caught.value)
    for name, reason in EXPECTED_REASONS.items():
        line = next(line for line in message.splitlines() if name in line)
        section = message[: message.index(line)].rsplit("\n  ", 1)[-1]
        assert section.startswith(reason), (name, section)
    assert "duplicate row" in message and "row 30 repeats row 2" in message
    assert "empty classes (1): ['c']" in message
    assert "'bb' is not in data.classes ['a', 'b', 'c']; did you mean 'b'" in message
    assert "deep16.png" not in message  # 16-bit is decoded, not rejected
    assert not (tmp_path / "run" / "checkpoints").exists()
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "DataCheckError" in record["error"]


def test_skip_trains_without_the_bad_samples_and_counts_them(tmp_path):
    manifest, _ = bad_csv_set(tmp_path / "data")
    record = run(_csv_overrides(manifest, "skip"), tmp_path / "run")
    assert record["status"] == "ok"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    check = saved["data_check"]
    assert check["dropped"] == {
        "unknown label": 1,
        "duplicate row": 1,
        "missing file": 1,
        "not an image": 1,
        "truncated": 1,
        "cross-part duplicate": 1,
    }
    assert check["empty_classes_dropped"] == ["c"]
    # 16 train + 1 sixteen-bit in train, 6 test; 5 files and one repeated row left out
    assert check["n_kept"] == 23 and check["n_listed"] == 16 + 1 + 6 + 5 + 1
    assert check["classes"] == {"a": 12, "b": 11}
    assert saved["classes"] == ["a", "b"] and saved["task"] == "binary"
    assert sum(saved["sizes"].values()) == 23 and saved["sizes"]["test"] == 6
    assert check["images"]["bits"] == {"8": 22, "16": 1}


def test_sixteen_bit_png_keeps_its_contrast(tmp_path):
    manifest, ramp = bad_csv_set(tmp_path / "data")
    source = csv_manifest(str(manifest), split_column="split", classes=["a", "b"], on_bad="skip")
    index = source.paths.index(str(tmp_path / "data" / "images" / "deep16.png"))
    loaded = source.image(index)
    expected = np.rint((ramp - 1000.0) * 255.0 / (7 * 255)).astype(np.uint8)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, expected)
    assert loaded.min() == 0 and loaded.max() == 255 and len(np.unique(loaded)) == 256
    # what a plain 8-bit conversion does to it: every pixel saturates to white
    assert np.unique(
        np.asarray(Image.open(tmp_path / "data/images/deep16.png").convert("L"))
    ).tolist() == [255]
    windowed = csv_manifest(
        str(manifest), split_column="split", classes=["a", "b"], window=[0, 4095]
    ).image(index)
    assert np.array_equal(windowed, np.rint(ramp * 255.0 / 4095).astype(np.uint8))


def test_image_folder_names_truncated_non_image_and_empty_class(tmp_path):
    root = tmp_path / "folder"
    for cls, digit in (("cat", 0), ("dog", 1)):
        (root / cls).mkdir(parents=True)
        _save_digits(root / cls, [f"{k}.png" for k in range(6)], [digit] * 6)
    (root / "empty").mkdir()
    raw = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "broken.png").write_bytes(raw[: len(raw) // 2])
    (root / "cat" / "header.png").write_bytes(raw[:8] + bytes(range(30)))
    (root / "dog" / "fake.jpg").write_bytes(b"GIF? no, plain bytes")
    source = image_folder(str(root))
    with pytest.raises(DataCheckError) as caught:
        check_source(source, Holdout())
    text = str(caught.value)
    assert f"{root / 'cat' / 'broken.png'}" in text and "truncated (1)" in text
    assert f"{root / 'dog' / 'fake.jpg'}" in text and "not an image (1)" in text
    assert (
        f"{root / 'cat' / 'header.png'}: starts like a PNG file" in text and "corrupt (1)" in text
    )
    assert "empty classes (1): ['empty']" in text
    kept, summary = check_source(image_folder(str(root), on_bad="skip"), Holdout())
    assert kept.classes == ["cat", "dog"] and len(kept) == 12
    assert summary["dropped"] == {"truncated": 1, "not an image": 1, "corrupt": 1}


def test_npz_stray_label_is_caught(tmp_path):
    images, labels = digit_images(10, 3)
    labels = labels.copy()
    labels[4] = 7
    np.savez(tmp_path / "stray.npz", train_images=images, train_labels=labels[:, None])
    with pytest.raises(DataCheckError, match=r"empty classes \(4\): \['3', '4', '5', '6'\]"):
        check_source(npz(path=str(tmp_path / "stray.npz")), Holdout())
    declared = npz(path=str(tmp_path / "stray.npz"), classes=["zero", "one", "two"])
    with pytest.raises(DataCheckError, match=r"stray.npz: train\[4\]: label 7; valid: 0..2"):
        check_source(declared, Holdout())
    kept, summary = check_source(
        npz(path=str(tmp_path / "stray.npz"), classes=["zero", "one", "two"], on_bad="skip"),
        Holdout(),
    )
    assert len(kept) == 29 and summary["dropped"] == {"unknown label": 1}
    assert np.bincount(kept.labels).tolist() == [9, 10, 10]


def test_csv_label_typo_is_suspected_unless_declared(tmp_path):
    images, labels = digit_images(24, 2)
    rows = ["image,label"]
    for i, (image, y) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'nevus' if y else 'melanoma'}")
    for i in (3, 5, 9):  # a typo in three rows
        rows[i + 1] = f"{i}.png,melanomma"
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(
        DataCheckError, match="class 'melanomma' has only 3 sample.*did you mean 'melanoma'"
    ):
        check_source(csv_manifest(str(tmp_path / "m.csv")), Holdout())
    with pytest.raises(DataCheckError, match="3.png: row 5: 'melanomma' is not in data.classes"):
        check_source(
            csv_manifest(str(tmp_path / "m.csv"), classes=["melanoma", "nevus"]), Holdout()
        )


def test_duplicates_are_grouped_so_folds_keep_them_together(tmp_path):
    root = tmp_path / "folder"
    for cls, digit in (("a", 0), ("b", 1)):
        (root / cls).mkdir(parents=True)
        _save_digits(root / cls, [f"{k}.png" for k in range(10)], [digit] * 10)
    # byte-identical copies under other names, and one re-encoded copy (same pixels, other bytes)
    for k in range(4):
        shutil.copy(root / "a" / f"{k}.png", root / "a" / f"copy{k}.png")
    Image.open(root / "b" / "0.png").save(root / "b" / "resaved.png", compress_level=0)
    assert (root / "b" / "resaved.png").read_bytes() != (root / "b" / "0.png").read_bytes()
    pairs = [(f"a/{k}.png", f"a/copy{k}.png") for k in range(4)] + [("b/0.png", "b/resaved.png")]
    for index in range(5):
        dm = ImageDataModule(image_folder(str(root)), KFold(5, index, test_fraction=0.2), 16, 1)
        dm.setup()
        assert dm.data_check["duplicates"] == {
            "clusters": 5,
            "images": 10,
            "cross_part": 0,
            "conflicting": 0,
        }
        part_of = {}
        for part, indices in dm.splits.parts().items():
            for i in indices:
                part_of[os.path.relpath(dm.source.paths[i], root)] = part
        for first, second in pairs:
            assert part_of[first] == part_of[second], (index, first, second)


def test_conflicting_labels_on_identical_images(tmp_path):
    root = tmp_path / "folder"
    for cls, digit in (("a", 0), ("b", 1)):
        (root / cls).mkdir(parents=True)
        _save_digits(root / cls, [f"{k}.png" for k in range(6)], [digit] * 6)
    shutil.copy(root / "a" / "0.png", root / "b" / "mislabelled.png")
    with pytest.raises(DataCheckError) as caught:
        check_source(image_folder(str(root)), Holdout())
    text = str(caught.value)
    assert "conflicting labels (2)" in text
    assert (
        f"{root / 'b' / 'mislabelled.png'}: labelled 'b', same pixels as {root / 'a' / '0.png'} ('a')"
        in text
    )


def test_check_results_are_cached_by_path_size_and_mtime(tmp_path):
    root = tmp_path / "folder"
    for cls, digit in (("a", 0), ("b", 1)):
        (root / cls).mkdir(parents=True)
        _save_digits(root / cls, [f"{k}.png" for k in range(5)], [digit] * 5)
    source = image_folder(str(root))
    _, first = check_source(source, Holdout())
    assert first["cache"]["misses"] == 10 and first["cache"]["hits"] == 0
    assert first["cache"]["file"] == str(root / ".medsweep-cache.sqlite")
    _, second = check_source(image_folder(str(root)), Holdout())
    assert second["cache"]["hits"] == 10 and second["cache"]["misses"] == 0
    # a changed file is checked again: truncate it and give it a new mtime
    target = root / "a" / "1.png"
    target.write_bytes(target.read_bytes()[:100])
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    cache = FileCache(root / ".medsweep-cache.sqlite")
    facts = inspect_files([str(target)], cache)
    assert cache.misses == 1 and facts[0]["error"] == "truncated"


def test_fold_scheme_needs_enough_samples_per_class(tmp_path):
    root = tmp_path / "folder"
    for cls, digit, n in (("a", 0, 10), ("b", 1, 10), ("c", 2, 4)):
        (root / cls).mkdir(parents=True)
        _save_digits(root / cls, [f"{k}.png" for k in range(n)], [digit] * n)
    with pytest.raises(
        DataCheckError, match=r"needs at least 6 samples per class; too few in:\n  'c': 4"
    ):
        check_source(image_folder(str(root), classes=["a", "b", "c"]), KFold(5, 0))
    kept, summary = check_source(image_folder(str(root), classes=["a", "b", "c"]), Holdout())
    assert summary["min_per_class"] == 3 and summary["classes"] == {"a": 10, "b": 10, "c": 4}


def test_data_check_summary_in_composed_run(tmp_path):
    cfg = compose([*FAST, "data=digits"], tmp_path / "run")
    from medsweep.pipeline import build_datamodule

    dm = build_datamodule(cfg)
    assert dm.data_check["n_kept"] == 1797 and dm.data_check["images"]["sizes"] == {"8x8": 1797}
    json.dumps(dm.data_check)
