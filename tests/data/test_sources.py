"""Image sources: npz, image folder, CSV manifest, the packaged sets; task inference; channels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medsweep.data.sources import animal_mnist, csv_manifest, digits, image_folder, infer_task, npz
from medsweep.data.transforms import to_channels


def test_npz_keeps_predefined_parts(npz_file):
    source = npz(path=str(npz_file))
    assert source.task == "multiclass" and source.classes == ["0", "1", "2"]
    assert source.images.shape == (60, 8, 8)
    assert (source.predefined == "train").sum() == 36 and (source.predefined == "test").sum() == 12


def test_npz_flag_resolves_file_under_root(npz_file, tmp_path):
    (tmp_path / "medmnist").mkdir()
    npz_file.rename(tmp_path / "medmnist" / "pathmnist_64.npz")
    source = npz(flag="pathmnist", root=str(tmp_path / "medmnist"), size=64)
    assert len(source) == 60
    with pytest.raises(FileNotFoundError, match="download=true"):
        npz(flag="pathmnist", root=str(tmp_path / "medmnist"), size=128)


def test_npz_multilabel_labels(tmp_path):
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.savez(tmp_path / "ml.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=labels)
    source = npz(path=str(tmp_path / "ml.npz"))
    assert (
        source.task == "multilabel"
        and source.labels.dtype == np.float32
        and source.output_units == 3
    )


def test_image_folder_classes_and_split_subfolders(folder_root, tmp_path):
    source = image_folder(str(folder_root))
    assert source.classes == ["digit0", "digit1", "digit2"] and len(source) == 36
    assert source.predefined is None and source.image(0).shape == (8, 8)
    split_root = tmp_path / "split"
    for part in ("train", "val"):
        (split_root / part / "a").mkdir(parents=True)
        (split_root / part / "b").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(split_root / part / "a" / f"{i}.png")
            Image.new("RGB", (8, 8), (0, i * 100, 0)).save(split_root / part / "b" / f"{i}.jpg")
    split = image_folder(str(split_root))
    assert sorted(set(split.predefined)) == ["train", "val"] and split.task == "binary"
    assert split.image(0).shape == (8, 8, 3)


def test_csv_label_column_and_groups(csv_file):
    source = csv_manifest(str(csv_file), group_column="patient")
    assert source.classes == ["digit0", "digit1", "digit2"] and source.task == "multiclass"
    assert source.groups[:4].tolist() == ["p0", "p0", "p1", "p1"]


def test_csv_one_hot_and_multi_hot_columns(tmp_path):
    for i in range(4):
        Image.new("L", (8, 8), i * 50).save(tmp_path / f"{i}.png")
    (tmp_path / "onehot.csv").write_text("image,a,b\n0.png,1,0\n1.png,0,1\n2.png,1,0\n3.png,0,1\n")
    onehot = csv_manifest(str(tmp_path / "onehot.csv"), label_column=None, label_columns=["a", "b"])
    assert onehot.task == "binary" and onehot.labels.tolist() == [0, 1, 0, 1]
    (tmp_path / "multi.csv").write_text("image,a,b\n0.png,1,1\n1.png,0,1\n2.png,1,0\n3.png,0,0\n")
    multi = csv_manifest(str(tmp_path / "multi.csv"), label_column=None, label_columns=["a", "b"])
    assert multi.task == "multilabel" and multi.labels.shape == (4, 2)
    (tmp_path / "bad.csv").write_text("image,a,b\n0.png,2,0\n")
    with pytest.raises(ValueError, match="only 0 and 1"):
        csv_manifest(str(tmp_path / "bad.csv"), label_column=None, label_columns=["a", "b"])


def test_packaged_sets():
    d = digits()
    assert d.images.shape == (1797, 8, 8) and d.images.dtype == np.uint8 and d.images.max() == 255
    assert digits("binary").task == "binary" and digits("multilabel").task == "multilabel"
    a = animal_mnist()
    assert a.images.shape == (10000, 28, 28) and np.bincount(a.labels).tolist() == [1000] * 10


def test_infer_task_and_explicit_task():
    assert infer_task(np.array([0, 1, 1])) == "binary"
    assert infer_task(np.array([0, 1, 2])) == "multiclass"
    assert infer_task(np.zeros((3, 2))) == "multilabel"
    assert digits("binary").with_task("multiclass").output_units == 2
    with pytest.raises(ValueError, match="task=binary needs 2 classes"):
        digits().with_task("binary")


def test_channel_conversion():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert to_channels(gray, 3).shape == (4, 4, 3)
    rgb = np.stack([gray, gray, gray], axis=2)
    assert np.array_equal(to_channels(rgb, 1)[:, :, 0], gray)


def test_csv_one_hot_cell_that_is_not_a_number_is_named(tmp_path):
    Image.new("L", (8, 8), 10).save(tmp_path / "0.png")
    (tmp_path / "t.csv").write_text("image,a,b\n0.png,1,0\n0.png,yes,0\n")
    with pytest.raises(ValueError, match=r"row 3, column 'a' holds 'yes'; label_columns"):
        csv_manifest(str(tmp_path / "t.csv"), label_column=None, label_columns=["a", "b"])


def test_image_folder_part_names_aliases_and_declared_order(tmp_path):
    for part, cls in (("Training", "no_tumor"), ("Training", "glioma"), ("Testing", "notumor")):
        (tmp_path / part / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 3).save(tmp_path / part / cls / "x.png")
    (tmp_path / "Training" / "stray").mkdir()
    Image.new("L", (8, 8), 5).save(tmp_path / "Training" / "stray" / "y.png")
    source = image_folder(
        str(tmp_path),
        classes=["notumor", "glioma"],
        parts={"Training": "train", "Testing": "test"},
        aliases={"no_tumor": "notumor"},
    )
    assert source.classes == ["notumor", "glioma"] and source.declared
    by_name = {
        p.split("/")[-3] + "/" + p.split("/")[-2]: int(y)
        for p, y in zip(source.paths, source.labels)
    }
    assert by_name == {"Testing/notumor": 0, "Training/glioma": 1, "Training/no_tumor": 0}
    assert source.predefined.tolist() == ["train", "train", "test"]
    assert source.rejected == [
        {
            "item": str(tmp_path / "Training" / "stray" / "y.png"),
            "reason": "unknown label",
            "detail": "class folder 'stray' is not in data.classes ['notumor', 'glioma']",
        }
    ]
    with pytest.raises(FileNotFoundError, match=r"none of the part folders \['Train'\]"):
        image_folder(str(tmp_path), parts={"Train": "train"})


def test_subset_relabels_dropped_classes():
    source = digits()
    keep = np.flatnonzero(np.isin(source.labels, [2, 7]))
    two = source.subset(keep, ["2", "7"])
    assert two.task == "binary" and sorted(np.unique(two.labels).tolist()) == [0, 1]
    assert np.array_equal(two.labels, (source.labels[keep] == 7).astype(np.int64))


def test_check_cache_falls_back_to_user_cache(tmp_path, monkeypatch):
    from medsweep.data.filecache import cache_file

    monkeypatch.setenv("MEDSWEEP_CACHE", str(tmp_path / "cache"))
    assert cache_file(tmp_path) == tmp_path / ".medsweep-cache.sqlite"
    elsewhere = cache_file(tmp_path / "not-a-folder")
    assert elsewhere.parent == tmp_path / "cache" and elsewhere.name.startswith("not-a-folder-")
