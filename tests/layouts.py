"""Tiny generated copies of the studies' datasets in their published layouts and file formats."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from helpers import digit_images
from PIL import Image


def digit_pictures(n_per_class: int, classes: int, size: int = 16) -> tuple[list, np.ndarray]:
    """Distinct digit images as 16x16 RGB PIL images (no two identical), and their labels."""
    images, labels = digit_images(n_per_class, classes)
    pictures = []
    for k, image in enumerate(images):
        big = np.kron(image, np.ones((2, 2), np.uint8))[:size, :size]
        rgb = np.stack([big, np.roll(big, 1, 0), np.full_like(big, (k * 7) % 256)], axis=-1)
        pictures.append(Image.fromarray(rgb))
    return pictures, labels


def write_class_folders(root: Path, names: list[str], n_per_class: int, ext: str = ".jpg") -> Path:
    """root/<name>/<i><ext> for each class name."""
    pictures, labels = digit_pictures(n_per_class, len(names))
    for i, (picture, y) in enumerate(zip(pictures, labels)):
        folder = root / names[y]
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"img{i:03d}{ext}", quality=95)
    return root


def write_brain_mri(root: Path, test_names: list[str] | None = None) -> Path:
    """Training/<class>/ and Testing/<class>/ with the class names of the dataset's releases."""
    names = ["glioma", "meningioma", "notumor", "pituitary"]
    write_class_folders(root / "Training", names, 8)
    write_class_folders(root / "Testing", test_names or names, 2)
    # the test images are different pictures: shift them so they never equal a training image
    for path in (root / "Testing").rglob("*.jpg"):
        array = np.asarray(Image.open(path))
        Image.fromarray(np.roll(array, 3, axis=1)).save(path, quality=95)
    return root


def write_fruits360(root: Path) -> Path:
    """Training/<fruit>/ and Test/<fruit>/ (fruit names with spaces and digits, as published)."""
    names = ["Apple Braeburn", "Apple Red 1", "Banana"]
    write_class_folders(root / "Training", names, 8)
    write_class_folders(root / "Test", names, 3)
    for path in (root / "Test").rglob("*.jpg"):
        array = np.asarray(Image.open(path))
        Image.fromarray(np.roll(array, 5, axis=0)).save(path, quality=95)
    return root


def write_melanoma(root: Path) -> Path:
    """benign/ and malignant/ folders."""
    return write_class_folders(root, ["benign", "malignant"], 10)


ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def write_isic2019(root: Path, n_per_class: int = 6, classes: int = 3) -> Path:
    """Ground-truth (one-hot, 9 columns), metadata (lesion_id, some missing) and ISIC_*.jpg images."""
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    pictures, labels = digit_pictures(n_per_class, classes)
    gt = ["image," + ",".join(ISIC_COLUMNS)]
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
    for i, (picture, y) in enumerate(zip(pictures, labels)):
        name = f"ISIC_{i:07d}"
        picture.save(images / f"{name}.jpg", quality=95)
        hot = ["1.0" if c == y else "0.0" for c in range(len(ISIC_COLUMNS))]
        gt.append(f"{name}," + ",".join(hot))
        lesion = "" if i % 5 == 4 else f"IL_{i // 2:07d}"  # two images per lesion; some unknown
        meta.append(f"{name},55.0,anterior torso,{lesion},male")
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(gt) + "\n")
    (root / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(meta) + "\n")
    return root


def write_ham10000(root: Path, n_per_class: int = 6) -> Path:
    """HAM10000_metadata.csv and images split over HAM10000_images_part_1/ and _part_2/."""
    dx = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    pictures, labels = digit_pictures(n_per_class, len(dx))
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"]
    for i, (picture, y) in enumerate(zip(pictures, labels)):
        folder = root / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"ISIC_{i:07d}.jpg", quality=95)
        rows.append(f"HAM_{i // 3:07d},ISIC_{i:07d},{dx[y]},histo,50.0,female,back,vidir_modern")
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def write_dicom(
    path: Path,
    stored: np.ndarray,
    patient: str = "ID_p0",
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """A CT slice in DICOM with signed 16-bit stored values and a rescale slope/intercept."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = patient
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = stored.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


RSNA_SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]


def write_rsna_ich(root: Path, n: int = 24) -> tuple[Path, np.ndarray]:
    """stage_2_train.csv (ID_<image>_<subtype>, Label; one line repeated) and stage_2_train/*.dcm.

    Returns the root and the multi-hot labels (5 subtypes + any) in image order.
    """
    rng = np.random.default_rng(0)
    labels = np.zeros((n, 6), dtype=int)
    lines = ["ID,Label"]
    for i in range(n):
        labels[i, i % 5] = 1
        if i % 3 == 0:
            labels[i, (i + 2) % 5] = 1
        if i % 4 == 3:
            labels[i, :5] = 0
        labels[i, 5] = int(labels[i, :5].any())
        stored = rng.integers(0, 2000, size=(16, 16)) + i
        write_dicom(root / "stage_2_train" / f"ID_{i:09x}.dcm", stored, patient=f"ID_p{i // 3}")
        for k, subtype in enumerate([*RSNA_SUBTYPES, "any"]):
            lines.append(f"ID_{i:09x}_{subtype},{labels[i, k]}")
    lines.append(lines[1])  # the published file repeats some lines
    (root / "stage_2_train.csv").write_text("\n".join(lines) + "\n")
    return root, labels


def _idx(array: np.ndarray) -> bytes:
    """An idx-ubyte file: magic (0, 0, uint8 type 0x08, ndim), big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, gz: bool = True) -> tuple[Path, dict]:
    """The four idx-ubyte files (gzipped as published); returns the root and the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, prefix, n in (("train", "train", 40), ("test", "t10k", 20)):
        images, labels = digit_images(n // 4, 4)
        images = np.stack([np.kron(im, np.ones((2, 2), np.uint8)) for im in images])
        images = np.pad(images, ((0, 0), (6, 6), (6, 6)))
        if part == "test":
            images = np.roll(images, 1, axis=2)
        arrays[part] = (images, labels)
        for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
            raw = _idx(data)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
    return root, arrays


def data_option_overrides(option: str, tmp_path: Path) -> list[str]:
    """What a ``data=<option>`` reading a public dataset needs to run on a tiny generated copy."""
    from helpers import write_npz

    root = tmp_path / option
    writers = {
        "brain_mri": lambda: [f"data.source.root={write_brain_mri(root)}"],
        "fruits360": lambda: [f"data.source.root={write_fruits360(root)}"],
        "melanoma": lambda: [f"data.source.root={write_melanoma(root)}"],
        "isic2019": lambda: [
            f"data.source.root={write_isic2019(root, n_per_class=8)}",
            "data.classes=[MEL,NV,BCC]",
        ],
        "ham10000": lambda: [f"data.source.root={write_ham10000(root, n_per_class=8)}"],
        "rsna_ich": lambda: [f"data.source.root={write_rsna_ich(root)[0]}", "loss=bce"],
        "dicom": lambda: [f"data.source.root={_write_dicom_classes(root)}"],
        "fashion_mnist": lambda: [
            f"data.source.root={write_fashion_mnist(root)[0]}",
            "data.classes=[a,b,c,d]",
        ],
        "medmnist": lambda: [
            f"data.source.path={write_npz(tmp_path / 'dermamnist.npz')}",
            "data.source.flag=dermamnist",
            "data.source.download=false",
        ],
    }
    return [*writers[option](), "data.num_workers=0"] if option in writers else []


def _write_dicom_classes(root: Path) -> Path:
    """root/<class>/<i>.dcm for two classes of random CT slices."""
    rng = np.random.default_rng(1)
    for k, cls in enumerate(("bleed", "normal")):
        for i in range(8):
            stored = rng.integers(900, 1200, size=(16, 16)) + 100 * k
            write_dicom(root / cls / f"{i}.dcm", stored, patient=f"{cls}{i // 2}")
    return root
