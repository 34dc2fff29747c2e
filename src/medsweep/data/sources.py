"""Image sources: where images, labels, groups and predefined splits come from."""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "multilabel")
PARTS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ImageSource:
    """A labelled image set held in memory (``images``) or on disk (``paths``)."""

    labels: np.ndarray
    classes: list[str]
    name: str
    images: np.ndarray | None = None
    paths: list[str] | None = None
    groups: np.ndarray | None = None
    predefined: np.ndarray | None = None
    task: str = field(default="")

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError(f"{self.name}: give exactly one of images or paths")
        n = len(self.images) if self.images is not None else len(self.paths)
        if len(self.labels) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.labels)} labels")
        for attr in ("groups", "predefined"):
            value = getattr(self, attr)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {attr} has {len(value)} entries for {n} images")
        if self.predefined is not None:
            bad = sorted(set(np.unique(self.predefined)) - set(PARTS))
            if bad:
                raise ValueError(f"{self.name}: unknown split names {bad}; valid: {list(PARTS)}")
        self.task = self.task or infer_task(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def output_units(self) -> int:
        """Number of logits a model needs: 1 for binary, one per class otherwise."""
        return 1 if self.task == "binary" else len(self.classes)

    def image(self, index: int) -> np.ndarray:
        """Return image ``index`` as a uint8 array (H, W) or (H, W, C)."""
        if self.images is not None:
            return self.images[index]
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            return np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)

    def stratify_labels(self) -> np.ndarray:
        """Labels as used for stratification: class indices, or the multi-hot matrix."""
        return self.labels

    def with_task(self, task: str | None) -> ImageSource:
        """Check an explicitly requested task against the labels and set it."""
        if task is None:
            return self
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not valid; choose one of {list(TASKS)}")
        if task == "multilabel" and self.labels.ndim != 2:
            raise ValueError(
                f"task=multilabel needs multi-hot labels; {self.name} has one label per image"
            )
        if task != "multilabel" and self.labels.ndim == 2:
            raise ValueError(
                f"task={task} needs one label per image; {self.name} has multi-hot labels"
            )
        if task == "binary" and len(self.classes) != 2:
            raise ValueError(f"task=binary needs 2 classes; {self.name} has {len(self.classes)}")
        self.task = task
        return self


def infer_task(labels: np.ndarray) -> str:
    """Binary for two classes, multiclass for more, multilabel for a multi-hot matrix."""
    if labels.ndim == 2:
        return "multilabel"
    return "binary" if len(np.unique(labels)) <= 2 else "multiclass"


def _to_uint8(images: np.ndarray, vmax: float) -> np.ndarray:
    return np.clip(np.rint(images.astype(np.float64) * (255.0 / vmax)), 0, 255).astype(np.uint8)


def digits(variant: str = "multiclass") -> ImageSource:
    """scikit-learn's 1,797 handwritten digits (8x8), as a multiclass, binary or multilabel task.

    binary: digit < 5 is the positive class; multilabel: {even, greater than 4, prime}.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _to_uint8(bunch.images, 16.0)
    y = bunch.target.astype(np.int64)
    if variant == "multiclass":
        return ImageSource(y, [str(c) for c in range(10)], "digits", images=images)
    if variant == "binary":
        return ImageSource((y < 5).astype(np.int64), ["5-9", "0-4"], "digits", images=images)
    if variant == "multilabel":
        multi = np.stack([y % 2 == 0, y > 4, np.isin(y, [2, 3, 5, 7])], axis=1).astype(np.float32)
        return ImageSource(multi, ["even", "gt4", "prime"], "digits", images=images)
    raise ValueError(
        f"data.source.variant={variant!r}; valid: ['multiclass', 'binary', 'multilabel']"
    )


ANIMAL_SHA256 = {
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
ANIMAL_CLASSES = [
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
]


def animal_mnist() -> ImageSource:
    """10,000 animal silhouettes (28x28, 10 balanced classes) shipped in the ``animal-mnist`` wheel."""
    try:
        folder = resources.files("animal_mnist") / "data" / "Animal_MNIST"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "data=animal_mnist needs the animal-mnist package: pip install --no-deps animal-mnist==0.4"
        ) from exc
    arrays = []
    for name, expected in ANIMAL_SHA256.items():
        raw = (folder / name).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected:
            raise ValueError(
                f"{folder / name}: sha256 {digest} differs from the known file; refusing to unpickle"
            )
        arrays.append(pickle.loads(gzip.decompress(raw)))  # safe: content verified by hash above
    images, labels = arrays
    return ImageSource(
        np.asarray(labels, dtype=np.int64),
        list(ANIMAL_CLASSES),
        "animal_mnist",
        images=np.asarray(images, dtype=np.uint8),
    )


NPZ_KEYS = ("train_images", "train_labels")


def npz(
    path: str | None = None,
    flag: str | None = None,
    root: str = "~/.medsweep/medmnist",
    size: int | None = None,
    download: bool = False,
    classes: list[str] | None = None,
) -> ImageSource:
    """A MedMNIST-format ``.npz`` file: a local ``path``, or a MedMNIST ``flag`` under ``root``.

    With ``download=True`` a missing flag file is fetched by the ``medmnist`` package.
    """
    if path is None:
        if flag is None:
            raise ValueError(
                "data.source: set data.source.path=FILE.npz or data.source.flag=<medmnist flag>"
            )
        file = Path(root).expanduser() / (
            f"{flag}.npz" if size in (None, 28) else f"{flag}_{size}.npz"
        )
        if not file.exists() and download:
            _download_medmnist(flag, file.parent, size)
    else:
        file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(
            f"data.source: npz file {file} does not exist"
            + ("" if path else " (set data.source.download=true to fetch it)")
        )
    with np.load(file, allow_pickle=False) as archive:
        keys = set(archive.files)
        missing = [k for k in NPZ_KEYS if k not in keys]
        if missing:
            raise KeyError(
                f"{file}: missing key(s) {missing}; found {sorted(keys)}; "
                "expected train_images, train_labels and optionally val_*/test_*"
            )
        parts = [p for p in PARTS if f"{p}_images" in keys and f"{p}_labels" in keys]
        images = np.concatenate([archive[f"{p}_images"] for p in parts])
        labels = np.concatenate([archive[f"{p}_labels"] for p in parts])
        predefined = np.concatenate([np.full(len(archive[f"{p}_labels"]), p) for p in parts])
    if images.dtype != np.uint8:
        raise ValueError(f"{file}: images must be uint8, got {images.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0].astype(np.int64)
        n_classes = int(labels.max()) + 1
    elif labels.ndim == 2:
        labels = labels.astype(np.float32)
        n_classes = labels.shape[1]
    else:
        labels = labels.astype(np.int64)
        n_classes = int(labels.max()) + 1
    names = list(classes) if classes else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(
            f"data.source.classes has {len(names)} names; {file} has {n_classes} classes"
        )
    return ImageSource(labels, names, file.stem, images=images, predefined=predefined)


def _download_medmnist(flag: str, root: Path, size: int | None) -> None:
    try:
        import medmnist
        from medmnist import INFO
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "data.source.download=true needs the medmnist package: pip install medmnist"
        ) from exc
    if flag not in INFO:
        raise ValueError(f"data.source.flag={flag!r} is not a MedMNIST flag; valid: {sorted(INFO)}")
    root.mkdir(parents=True, exist_ok=True)
    dataset_class = getattr(medmnist, INFO[flag]["python_class"])
    dataset_class(split="train", download=True, root=str(root), size=size or 28)


def image_folder(root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> ImageSource:
    """A folder per class (``root/<class>/*.png``), or ``root/{train,val,test}/<class>/*``."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"data.source.root: folder {base} does not exist")
    split_dirs = [base / p for p in PARTS if (base / p).is_dir()]
    tops = split_dirs or [base]
    classes = sorted({d.name for top in tops for d in top.iterdir() if d.is_dir()})
    if not classes:
        raise ValueError(f"{base}: no class folders found (expected {base}/<class>/<image>)")
    paths, labels, predefined = [], [], []
    for top in tops:
        for ci, cls in enumerate(classes):
            folder = top / cls
            if not folder.is_dir():
                continue
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in extensions)
            paths += [str(f) for f in files]
            labels += [ci] * len(files)
            predefined += [top.name] * len(files)
    if not paths:
        raise ValueError(f"{base}: no images with extensions {list(extensions)}")
    return ImageSource(
        np.asarray(labels, dtype=np.int64),
        classes,
        base.name,
        paths=paths,
        predefined=np.asarray(predefined) if split_dirs else None,
    )


def csv_manifest(
    path: str,
    image_column: str = "image",
    label_column: str | None = "label",
    label_columns: list[str] | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
    root: str | None = None,
    image_extension: str = "",
) -> ImageSource:
    """A manifest CSV: an image-path column and one label column or one-/multi-hot columns."""
    import pandas as pd

    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"data.source.path: manifest {file} does not exist")
    table = pd.read_csv(file)
    wanted = {
        "image_column": image_column,
        "group_column": group_column,
        "split_column": split_column,
    }
    if label_columns:
        wanted.update({f"label_columns[{i}]": c for i, c in enumerate(label_columns)})
    elif label_column:
        wanted["label_column"] = label_column
    else:
        raise ValueError(f"{file}: set data.source.label_column or data.source.label_columns")
    for key, column in wanted.items():
        if column is not None and column not in table.columns:
            raise KeyError(
                f"{file}: column {column!r} (data.source.{key}) not found; "
                f"columns are {list(table.columns)}"
            )
    if table[image_column].isna().any():
        row = int(table[image_column].isna().to_numpy().argmax())
        raise ValueError(f"{file}: row {row + 2} has no value in column {image_column!r}")
    base = Path(root).expanduser() if root else file.parent
    paths = [str(base / f"{p}{image_extension}") for p in table[image_column].astype(str)]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(
            f"{file}: {len(missing)} image(s) in column {image_column!r} not found, "
            f"e.g. {missing[:3]}"
        )
    if label_columns:
        hot = table[list(label_columns)].to_numpy(dtype=np.float32)
        if not np.isin(hot, (0.0, 1.0)).all():
            raise ValueError(f"{file}: label_columns {list(label_columns)} must hold only 0 and 1")
        classes = [str(c) for c in label_columns]
        labels = hot.argmax(1).astype(np.int64) if (hot.sum(1) == 1).all() else hot
    else:
        values = table[label_column]
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise ValueError(f"{file}: row {row + 2} has no value in column {label_column!r}")
        classes = sorted(values.astype(str).unique())
        labels = values.astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    groups = table[group_column].astype(str).to_numpy() if group_column else None
    predefined = table[split_column].astype(str).to_numpy() if split_column else None
    return ImageSource(
        labels, classes, file.stem, paths=paths, groups=groups, predefined=predefined
    )
