"""Readers of the studies' public datasets, each in its published layout."""

from __future__ import annotations

import gzip
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medsweep.data.filecache import FileCache, cache_file, file_key, user_cache_dir
from medsweep.data.images import DICOM_EXTENSIONS, HEAD_CT_WINDOWS
from medsweep.data.sources import (
    ImageSource,
    _decode_options,
    image_folder,
    manifest_table,
    npz,
    rejection,
)

log = logging.getLogger(__name__)

BRAIN_MRI_CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
BRAIN_MRI_ALIASES = {
    "no_tumor": "notumor",
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "pituitary_tumor": "pituitary",
}
MELANOMA_CLASSES = ["benign", "malignant"]
ISIC2019_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC2019_CLASSES = ISIC2019_COLUMNS[:8]  # UNK marks no training image
HAM10000_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
RSNA_SUBTYPES = [
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
    "any",
]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MEDMNIST_SIZES = (28, 64, 128, 224)


def find_layout(root: str | Path, marker: str, layout: str) -> Path:
    """``root`` if it holds ``marker``, else the one folder up to three levels below that does."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"data.source.root: folder {base} does not exist")
    if (base / marker).exists():
        return base
    for depth in ("*", "*/*", "*/*/*"):
        found = sorted(p.parent for p in base.glob(f"{depth}/{marker}"))
        if found:
            return found[0]
    raise FileNotFoundError(f"{base}: no {marker} found; expected the layout {layout}")


def brain_mri(
    root: str,
    classes: list[str] | None = None,
    on_bad: str = "error",
    window: list[float] | None = None,
) -> ImageSource:
    """Brain-tumour MRI: ``Training/`` and ``Testing/`` folders of glioma, meningioma, notumor, pituitary.

    ``no_tumor`` and the ``*_tumor`` folder names of the older release are read as the same
    classes; ``Testing/`` is the predefined test part.
    """
    base = find_layout(root, "Training", "root/Training/<class>/*.jpg and root/Testing/<class>/*")
    return image_folder(
        str(base),
        classes=list(classes or BRAIN_MRI_CLASSES),
        parts={"Training": "train", "Testing": "test"},
        aliases=BRAIN_MRI_ALIASES,
        window=window,
        on_bad=on_bad,
        name="brain_mri",
    )


def fruits360(root: str, classes: list[str] | None = None, on_bad: str = "error") -> ImageSource:
    """Fruits-360: ``Training/`` and ``Test/`` folders with one folder per fruit; Test is the test part."""
    base = find_layout(root, "Training", "root/Training/<class>/*.jpg and root/Test/<class>/*")
    return image_folder(
        str(base),
        classes=list(classes) if classes else None,
        parts={"Training": "train", "Test": "test"},
        on_bad=on_bad,
        name="fruits360",
    )


def melanoma(root: str, classes: list[str] | None = None, on_bad: str = "error") -> ImageSource:
    """Melanoma: ``benign/`` and ``malignant/`` folders, optionally under train/ val/ test/."""
    return image_folder(
        root, classes=list(classes or MELANOMA_CLASSES), on_bad=on_bad, name="melanoma"
    )


def _index_images(base: Path, extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> dict:
    """Image files under ``base`` by name without extension."""
    index: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() in extensions and path.is_file():
            index.setdefault(path.stem, str(path))
    return index


def isic2019(
    root: str,
    ground_truth: str = "ISIC_2019_Training_GroundTruth.csv",
    metadata: str | None = "ISIC_2019_Training_Metadata.csv",
    images: str = "ISIC_2019_Training_Input",
    classes: list[str] | None = None,
    on_bad: str = "error",
) -> ImageSource:
    """ISIC 2019: the one-hot ground-truth CSV, the metadata CSV (``lesion_id`` groups) and the images.

    Classes are MEL, NV, BCC, AK, BKL, DF, VASC, SCC; a row marked UNK, or marking no class or
    several, is rejected. Images without a lesion id form their own group.
    """
    import pandas as pd

    base = Path(root).expanduser()
    gt_file = base / ground_truth
    if not gt_file.exists():
        raise FileNotFoundError(f"data.source.ground_truth: {gt_file} does not exist")
    table = pd.read_csv(gt_file, dtype={"image": str})
    if metadata is not None:
        meta_file = base / metadata
        if not meta_file.exists():
            raise FileNotFoundError(
                f"data.source.metadata: {meta_file} does not exist (it holds lesion_id, which "
                "keeps a lesion's images in one part; set data.source.metadata=null to go without)"
            )
        meta = pd.read_csv(meta_file, dtype={"image": str, "lesion_id": str})
        for column in ("image", "lesion_id"):
            if column not in meta.columns:
                raise KeyError(
                    f"{meta_file}: column {column!r} not found; columns: {list(meta.columns)}"
                )
        lesions = meta.drop_duplicates("image").set_index("image")["lesion_id"]
        table["lesion_id"] = table["image"].map(lesions)
    folder = base / images if (base / images).is_dir() else base
    columns = [c for c in ISIC2019_COLUMNS if c in table.columns]
    return manifest_table(
        table,
        gt_file,
        image_column="image",
        label_column=None,
        label_columns=columns,
        group_column="lesion_id" if metadata is not None else None,
        split_column=None,
        base=folder,
        image_extension=".jpg",
        classes=list(classes or ISIC2019_CLASSES),
        one_hot=True,
        on_bad=on_bad,
        name="isic2019",
    )


def ham10000(
    root: str,
    metadata: str = "HAM10000_metadata.csv",
    classes: list[str] | None = None,
    on_bad: str = "error",
) -> ImageSource:
    """HAM10000: ``HAM10000_metadata.csv`` (image_id, lesion_id, dx) and the image folders below root.

    Images are found by id in any folder under root (``HAM10000_images_part_1/2``); a lesion's
    images share a group.
    """
    import pandas as pd

    base = Path(root).expanduser()
    meta_file = base / metadata
    if not meta_file.exists():
        raise FileNotFoundError(f"data.source.metadata: {meta_file} does not exist")
    table = pd.read_csv(meta_file, dtype={"image_id": str, "lesion_id": str})
    index = _index_images(base)
    return manifest_table(
        table,
        meta_file,
        image_column="image_id",
        label_column="dx",
        label_columns=None,
        group_column="lesion_id",
        split_column=None,
        base=base,
        classes=list(classes or HAM10000_CLASSES),
        on_bad=on_bad,
        name="ham10000",
        locate=lambda image_id: index.get(image_id, str(base / f"{image_id}.jpg")),
    )


def _patient_id(path: str) -> dict:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return {"PatientID": str(header.get("PatientID", "") or "")}
    except Exception as exc:  # unreadable files are named by the pre-flight check
        return {"error": f"{type(exc).__name__}: {exc}"}


def dicom_patients(paths: list[str], root: str | Path, workers: int = 4) -> list[str | None]:
    """``PatientID`` from each DICOM header (cached beside the data), None where unreadable or empty."""
    cache = FileCache(cache_file(root))
    keys = {p: k for p in paths if (k := file_key(p)) is not None}
    known = cache.get("dicom-patient-v1", keys)
    todo = [p for p in keys if p not in known]
    if todo:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            fresh = dict(zip(todo, pool.map(_patient_id, todo, chunksize=64)))
        cache.put("dicom-patient-v1", ((p, keys[p], fresh[p]) for p in todo))
        known.update(fresh)
    return [known.get(p, {}).get("PatientID") or None for p in paths]


def rsna_ich(
    root: str,
    labels: str = "stage_2_train.csv",
    images: str = "stage_2_train",
    windows: list[list[float]] | None = None,
    group_by_patient: bool = True,
    on_bad: str = "error",
    workers: int = 4,
) -> ImageSource:
    """RSNA intracranial haemorrhage: ``stage_2_train.csv`` (``ID_<image>_<subtype>``, Label) and DICOM slices.

    Six labels per slice (five subtypes and ``any``); the slice is windowed into three channels
    (brain 40/80, subdural 80/200, bone 600/2800 by default) after RescaleSlope/Intercept;
    ``PatientID`` from the header is the group. Repeated identical CSV lines are read once;
    a slice with contradicting or missing subtype lines is rejected.
    """
    import pandas as pd

    base = Path(root).expanduser()
    csv = base / labels
    if not csv.exists():
        raise FileNotFoundError(f"data.source.labels: {csv} does not exist")
    table = pd.read_csv(csv, dtype={"ID": str})
    for column in ("ID", "Label"):
        if column not in table.columns:
            raise KeyError(f"{csv}: column {column!r} not found; columns: {list(table.columns)}")
    table["line"] = np.arange(len(table)) + 2
    parts = table["ID"].str.rsplit("_", n=1, expand=True)
    table["image"], table["subtype"] = parts[0], parts[1]
    rejected = []
    wrong = ~table["subtype"].isin(RSNA_SUBTYPES) | table["image"].isna()
    for _, row in table[wrong].iterrows():
        rejected.append(
            rejection(
                f"{csv}: row {row['line']}",
                "unknown label",
                f"ID {row['ID']!r} does not end in one of {RSNA_SUBTYPES}",
            )
        )
    table = table[~wrong]
    repeats = table.duplicated(["ID", "Label"])
    if repeats.any():
        log.info("%s: %d repeated identical line(s) read once", csv, int(repeats.sum()))
    table = table[~repeats]
    conflicts = table.duplicated("ID", keep=False)
    bad_images = set(table.loc[conflicts, "image"])
    for image in sorted(bad_images):
        lines = table.loc[conflicts & (table["image"] == image), "line"].tolist()
        rejected.append(
            rejection(
                f"{base / images / image}.dcm", "conflicting labels", f"rows {lines} disagree"
            )
        )
    table = table[~table["image"].isin(bad_images)]
    wide = table.pivot(index="image", columns="subtype", values="Label")
    wide = wide.reindex(columns=RSNA_SUBTYPES)
    first_line = table.groupby("image")["line"].min()
    wide = wide.loc[first_line.sort_values().index]
    rows = first_line.loc[wide.index].tolist()
    wide = wide.reset_index()
    folder = base / images if (base / images).is_dir() else base
    paths = [str(folder / f"{i}.dcm") for i in wide["image"]]
    if group_by_patient:
        patients = dicom_patients(paths, folder, workers)
        wide["patient"] = [p or f"slice:{i}" for p, i in zip(patients, wide["image"])]
    source = manifest_table(
        wide,
        csv,
        image_column="image",
        label_column=None,
        label_columns=RSNA_SUBTYPES,
        group_column="patient" if group_by_patient else None,
        split_column=None,
        base=folder,
        image_extension=".dcm",
        one_hot=False,
        decode=_decode_options(None, windows or [list(w) for w in HEAD_CT_WINDOWS]),
        on_bad=on_bad,
        name="rsna_ich",
        rows=rows,
    )
    source.rejected = rejected + source.rejected
    return source


def dicom_folder(
    root: str,
    windows: list[list[float]] | None = None,
    classes: list[str] | None = None,
    group_by_patient: bool = False,
    on_bad: str = "error",
    workers: int = 4,
) -> ImageSource:
    """DICOM slices in a folder per class (optionally under train/ val/ test/), windowed per channel.

    ``windows``: (centre, width) per output channel after RescaleSlope/Intercept; null maps each
    slice's own value range. ``group_by_patient`` groups slices by the header's ``PatientID``.
    """
    source = image_folder(
        root,
        extensions=DICOM_EXTENSIONS,
        classes=classes,
        dicom_windows=windows,
        on_bad=on_bad,
        name=Path(root).name,
    )
    if group_by_patient:
        patients = dicom_patients(source.paths, source.root, workers)
        source.groups = np.asarray(
            [p or f"slice:{path}" for p, path in zip(patients, source.paths)]
        )
    return source


def _idx_file(folders: list[Path], name: str) -> Path | None:
    """The idx file ``name``, uncompressed, or its ``.gz`` decompressed into the user cache."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
        packed = folder / f"{name}.gz"
        if packed.is_file():
            target = user_cache_dir() / "idx" / f"{name}-{packed.stat().st_size}"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_suffix(".part")
                part.write_bytes(gzip.decompress(packed.read_bytes()))
                part.replace(target)
            return target
    return None


def fashion_mnist(
    root: str = "~/.medsweep/fashion_mnist",
    download: bool = False,
    classes: list[str] | None = None,
    on_bad: str = "error",
) -> ImageSource:
    """Fashion-MNIST: the four idx-ubyte(.gz) files in ``root`` (or torchvision's ``root/FashionMNIST/raw``).

    ``download=True`` fetches them with torchvision when absent; t10k is the predefined test part.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    base = Path(root).expanduser()
    folders = [base, base / "FashionMNIST" / "raw"]
    wanted = [name for pair in FASHION_FILES.values() for name in pair]
    if download and any(_idx_file(folders, n) is None for n in wanted):
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(base), train=train, download=True)
    missing = [n for n in wanted if _idx_file(folders, n) is None]
    if missing:
        raise FileNotFoundError(
            f"data.source.root={base}: missing {missing} (or their .gz); "
            "set data.source.download=true to fetch them"
        )
    images, labels, predefined, ids = [], [], [], []
    for part, (image_name, label_name) in FASHION_FILES.items():
        x = read_image_file(str(_idx_file(folders, image_name))).numpy()
        y = read_label_file(str(_idx_file(folders, label_name))).numpy().astype(np.int64)
        if len(x) != len(y):
            raise ValueError(
                f"{base}: {image_name} has {len(x)} images, {label_name} {len(y)} labels"
            )
        images.append(x)
        labels.append(y)
        predefined += [part] * len(y)
        ids += [f"{image_name}[{k}]" for k in range(len(y))]
    x, y = np.concatenate(images), np.concatenate(labels)
    names = list(classes or FASHION_CLASSES)
    keep = (y >= 0) & (y < len(names))
    rejected = [
        rejection(ids[i], "unknown label", f"label {y[i]}; valid: 0..{len(names) - 1}")
        for i in np.flatnonzero(~keep)
    ]
    return ImageSource(
        y[keep],
        names,
        "fashion_mnist",
        images=x[keep],
        predefined=np.asarray(predefined)[keep],
        ids=[ids[i] for i in np.flatnonzero(keep)],
        rejected=rejected,
        on_bad=on_bad,
        declared=True,
    )


def medmnist(
    flag: str,
    size: int = 28,
    root: str = "~/.medsweep/medmnist",
    path: str | None = None,
    download: bool = True,
    classes: list[str] | None = None,
    on_bad: str = "error",
) -> ImageSource:
    """A 2D MedMNIST dataset by ``flag`` and ``size``: fetched by the ``medmnist`` package when
    absent (``download=true``), or read from a local (possibly subsampled) ``path``.

    Class names come from the ``medmnist`` package's INFO when it is installed.
    """
    if int(size) not in MEDMNIST_SIZES:
        raise ValueError(
            f"data.source.size={size} is not a MedMNIST size; valid: {list(MEDMNIST_SIZES)}"
        )
    if flag.lower().endswith("3d"):
        raise ValueError(f"data.source.flag={flag!r} is a 3D MedMNIST set; only 2D flags are read")
    names = list(classes) if classes else _medmnist_names(flag)
    return npz(
        path=path,
        flag=flag,
        root=root,
        size=int(size),
        download=download,
        classes=names,
        on_bad=on_bad,
    )


def _medmnist_names(flag: str) -> list[str] | None:
    """Class names of ``flag`` from the medmnist package's INFO, when it is installed."""
    try:
        from medmnist import INFO
    except ModuleNotFoundError:
        return None
    if flag not in INFO:
        raise ValueError(f"data.source.flag={flag!r} is not a MedMNIST flag; valid: {sorted(INFO)}")
    label = INFO[flag]["label"]
    return [label[str(k)] for k in range(len(label))]
