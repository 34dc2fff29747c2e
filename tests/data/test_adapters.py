"""The studies' datasets read in their published layouts; each trains a fast_dev_run on a tiny copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FAST, compose, run, write_npz
from layouts import (
    write_brain_mri,
    write_dicom,
    write_fashion_mnist,
    write_fruits360,
    write_ham10000,
    write_isic2019,
    write_melanoma,
    write_rsna_ich,
)
from PIL import Image

from medsweep.data.adapters import (
    brain_mri,
    dicom_folder,
    fashion_mnist,
    fruits360,
    ham10000,
    isic2019,
    medmnist,
    melanoma,
    rsna_ich,
)
from medsweep.data.folds import KFold
from medsweep.data.images import HEAD_CT_WINDOWS, read_image
from medsweep.data.preflight import DataCheckError, check_source
from medsweep.pipeline import build_datamodule


def _train(tmp_path, overrides):
    record = run([*FAST, "data.num_workers=0", *overrides], tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "ok" and saved["status"] == "ok"
    return saved


def _parts_of_groups(tmp_path, overrides):
    """For each fold of a 3-fold split: every group's set of parts."""
    seen = []
    for index in range(3):
        cfg = compose(
            [*FAST, "data.num_workers=0", "fold=kfold", "fold.n_folds=3", f"fold.index={index}"]
            + overrides,
            tmp_path / f"fold{index}",
        )
        dm = build_datamodule(cfg)
        groups = dm.source.groups
        parts: dict[str, set] = {}
        for part, indices in dm.splits.parts().items():
            for i in indices:
                parts.setdefault(groups[i], set()).add(part)
        seen.append(parts)
    return seen


def test_brain_mri_reads_training_and_testing_and_old_names(tmp_path):
    root = write_brain_mri(
        tmp_path / "mri",
        test_names=["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"],
    )
    source = brain_mri(str(root))
    assert source.classes == ["glioma", "meningioma", "notumor", "pituitary"]
    assert np.bincount(source.labels[source.predefined == "test"]).tolist() == [2, 2, 2, 2]
    assert (source.predefined == "train").sum() == 32
    saved = _train(tmp_path, ["data=brain_mri", f"data.source.root={root}", "fold=holdout"])
    assert saved["sizes"]["test"] == 8 and saved["sizes"]["train"] + saved["sizes"]["val"] == 32
    assert saved["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]


def test_fruits360_uses_test_folder_as_test_part(tmp_path):
    root = write_fruits360(tmp_path / "fruits-360")
    source = fruits360(str(tmp_path))  # found one level down
    assert source.classes == ["Apple Braeburn", "Apple Red 1", "Banana"]
    assert (source.predefined == "test").sum() == 9
    saved = _train(tmp_path, ["data=fruits360", f"data.source.root={root}"])
    assert saved["sizes"]["test"] == 9


def test_melanoma_folders_benign_negative_malignant_positive(tmp_path):
    root = write_melanoma(tmp_path / "melanoma")
    source = melanoma(str(root))
    assert source.classes == ["benign", "malignant"] and source.task == "binary"
    assert all(("malignant" in p) == bool(y) for p, y in zip(source.paths, source.labels))
    _train(tmp_path, ["data=melanoma", f"data.source.root={root}"])


def test_isic2019_one_hot_and_lesion_groups(tmp_path):
    root = write_isic2019(tmp_path / "isic", n_per_class=8, classes=3)
    source = isic2019(str(root))
    assert source.classes == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    assert source.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    # images 2k and 2k+1 share lesion IL_k; every fifth image has no lesion id: its own group
    assert source.groups[0] == source.groups[1] == "IL_0000000"
    assert source.groups[4] == "isic2019:row6"
    overrides = ["data=isic2019", f"data.source.root={root}", "data.classes=[MEL,NV,BCC]"]
    for parts in _parts_of_groups(tmp_path, overrides):
        assert all(len(p) == 1 for p in parts.values())
    # rows marked UNK are rejected (not a training class)
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 9)[0] + ",0.0" * 8 + ",1.0"
    gt.write_text("\n".join(lines) + "\n")
    unk = isic2019(str(root))
    assert unk.rejected[0]["reason"] == "unknown label" and "['UNK']" in unk.rejected[0]["detail"]


def test_isic2019_trains(tmp_path):
    root = write_isic2019(tmp_path / "isic", n_per_class=8, classes=3)
    saved = _train(
        tmp_path,
        ["data=isic2019", f"data.source.root={root}", "data.classes=[MEL,NV,BCC]"],
    )
    assert saved["classes"] == ["MEL", "NV", "BCC"] and saved["data_check"]["groups"] == 16


def test_ham10000_finds_images_in_both_parts_and_groups_lesions(tmp_path):
    root = write_ham10000(tmp_path / "ham", n_per_class=8)
    source = ham10000(str(root))
    assert source.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert {p.split("/")[-2] for p in source.paths} == {
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
    }
    assert source.groups[:4].tolist() == ["HAM_0000000"] * 3 + ["HAM_0000001"]
    for parts in _parts_of_groups(tmp_path, ["data=ham10000", f"data.source.root={root}"]):
        assert all(len(p) == 1 for p in parts.values())
    _train(tmp_path, ["data=ham10000", f"data.source.root={root}"])


def test_dicom_windowing_equals_hand_computation(tmp_path):
    stored = np.arange(-40, 216, dtype=np.int16).reshape(16, 16) * 12  # -480 .. 2580
    path = write_dicom(tmp_path / "slice.dcm", stored, slope=2.0, intercept=-1024.0)
    hu = stored.astype(np.float64) * 2.0 - 1024.0
    expected = []
    for centre, width in ((40, 80), (80, 200), (600, 2800)):
        low = centre - width / 2
        expected.append(np.rint(np.clip((hu - low) / width, 0, 1) * 255).astype(np.uint8))
    image = read_image(path, dicom_windows=HEAD_CT_WINDOWS)
    assert image.shape == (16, 16, 3)
    assert np.array_equal(image, np.stack(expected, axis=-1))
    # without windows: the slice's own HU range
    own = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255).astype(np.uint8)
    assert np.array_equal(read_image(path), own)


def test_rsna_ich_six_labels_patient_groups_and_trains(tmp_path):
    root, labels = write_rsna_ich(tmp_path / "rsna", n=24)
    source = rsna_ich(str(root))
    assert source.classes == [
        "epidural",
        "intraparenchymal",
        "intraventricular",
        "subarachnoid",
        "subdural",
        "any",
    ]
    assert source.task == "multilabel" and np.array_equal(source.labels, labels)
    assert source.groups.tolist() == [f"ID_p{i // 3}" for i in range(24)]
    assert source.image(0).shape == (16, 16, 3)
    for parts in _parts_of_groups(
        tmp_path, ["data=rsna_ich", f"data.source.root={root}", "loss=bce"]
    ):
        assert all(len(p) == 1 for p in parts.values())
    saved = _train(tmp_path, ["data=rsna_ich", f"data.source.root={root}", "loss=bce"])
    assert saved["task"] == "multilabel"


def test_rsna_ich_rejects_contradicting_lines(tmp_path):
    root, _ = write_rsna_ich(tmp_path / "rsna", n=24)
    csv = root / "stage_2_train.csv"
    lines = csv.read_text().splitlines()
    image, subtype = lines[1].split(",")[0].rsplit("_", 1)
    flipped = lines[1].split(",")[1] == "0"
    lines.append(f"{image}_{subtype},{int(flipped)}")
    csv.write_text("\n".join(lines) + "\n")
    source = rsna_ich(str(root))
    assert len(source) == 23
    assert source.rejected[0]["reason"] == "conflicting labels"
    assert source.rejected[0]["item"].endswith(f"{image}.dcm")


def test_dicom_folder_option(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("bleed", "normal"):
        for i in range(8):
            write_dicom(
                tmp_path / "ct" / cls / f"{i}.dcm",
                rng.integers(900, 1200, size=(16, 16)) + (100 if cls == "bleed" else 0),
                patient=f"{cls}{i // 2}",
            )
    source = dicom_folder(str(tmp_path / "ct"), windows=[[40, 80]], group_by_patient=True)
    assert source.image(0).shape == (16, 16) and source.groups[:2].tolist() == ["bleed0"] * 2
    _train(tmp_path, ["data=dicom", f"data.source.root={tmp_path / 'ct'}", "data.channels=3"])


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files(tmp_path, gz):
    root, arrays = write_fashion_mnist(tmp_path / "fm", gz=gz)
    source = fashion_mnist(str(root))
    train_images, train_labels = arrays["train"]
    assert np.array_equal(source.images[: len(train_labels)], train_images)
    assert np.array_equal(source.labels[source.predefined == "test"], arrays["test"][1])
    assert source.classes[0] == "T-shirt/top" and (source.predefined == "test").sum() == 20


def test_fashion_mnist_trains_with_t10k_as_test(tmp_path):
    root, _ = write_fashion_mnist(tmp_path / "fm")
    saved = _train(
        tmp_path,
        ["data=fashion_mnist", f"data.source.root={root}", "data.classes=[a,b,c,d]"],
    )
    assert saved["sizes"]["test"] == 20 and saved["classes"] == ["a", "b", "c", "d"]


def test_medmnist_local_subsampled_file(tmp_path):
    write_npz(tmp_path / "dermamnist_64.npz", n_per_class=20, classes=3)
    source = medmnist(
        "dermamnist", size=64, root=str(tmp_path), download=False, classes=["x", "y", "z"]
    )
    assert len(source) == 60 and source.classes == ["x", "y", "z"]
    with pytest.raises(
        ValueError, match=r"size=100 is not a MedMNIST size; valid: \[28, 64, 128, 224\]"
    ):
        medmnist("dermamnist", size=100, root=str(tmp_path))
    with pytest.raises(ValueError, match="3D"):
        medmnist("organmnist3d", root=str(tmp_path))
    _train(
        tmp_path,
        [
            "data=medmnist",
            "data.source.flag=dermamnist",
            "data.source.size=64",
            f"data.source.root={tmp_path}",
            "data.source.download=false",
            "data.classes=[x,y,z]",
        ],
    )


@pytest.mark.parametrize(
    ("mode", "make", "expected"),
    [
        (
            "palette",
            lambda a: Image.fromarray(a).convert("P"),
            lambda a: np.asarray(Image.fromarray(a).convert("P").convert("RGB")),
        ),
        (
            "gray+alpha",
            lambda a: Image.fromarray(np.dstack([a[..., 0], np.full_like(a[..., 0], 128)]), "LA"),
            lambda a: np.rint(a[..., 0] * (128 / 255)).astype(np.uint8),
        ),
        (
            "rgba",
            lambda a: Image.fromarray(np.dstack([a, np.full_like(a[..., 0], 255)])),
            lambda a: a,
        ),
        (
            "bilevel",
            lambda a: Image.fromarray(a[..., 0] > 127),
            lambda a: np.where(a[..., 0] > 127, 255, 0).astype(np.uint8),
        ),
    ],
)
def test_pil_modes_are_converted_explicitly(tmp_path, mode, make, expected):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    make(array).save(path)
    assert np.array_equal(read_image(path), expected(array))


def test_float_tiff_scaled_by_range(tmp_path):
    values = np.linspace(-3.5, 12.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "f.tif")
    expected = np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(
        np.uint8
    )
    assert np.array_equal(read_image(tmp_path / "f.tif"), expected)


def test_dicom_folder_names_truncated_and_non_dicom_slices(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("bleed", "normal"):
        for i in range(6):
            write_dicom(tmp_path / "ct" / cls / f"{i}.dcm", rng.integers(0, 3000, size=(16, 16)))
    whole = (tmp_path / "ct" / "bleed" / "0.dcm").read_bytes()
    (tmp_path / "ct" / "bleed" / "0.dcm").write_bytes(whole[:-100])
    (tmp_path / "ct" / "normal" / "notes.dcm").write_text("a report, not a slice")
    with pytest.raises(DataCheckError) as caught:
        check_source(dicom_folder(str(tmp_path / "ct")), KFold(3, 0))
    text = str(caught.value)
    assert "truncated (1)" in text and f"{tmp_path / 'ct' / 'bleed' / '0.dcm'}: ValueError" in text
    assert "not an image (1)" in text and str(tmp_path / "ct" / "normal" / "notes.dcm") in text
