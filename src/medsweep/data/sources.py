"""Image sources: where images, labels, groups and predefined splits come from."""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from medsweep.data.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "multilabel")
PARTS = ("train", "val", "test")
POLICIES = ("error", "skip")
# folder names read as predefined parts when a source has them (others are named per adapter)
PART_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class ImageSource:
    """A labelled image set held in memory (``images``) or on disk (``paths``).

    ``rejected`` lists entries the reader could not turn into samples (a missing or unknown
    label, a repeated row), as ``{"item", "reason", "detail"}``; the pre-flight check reports
    them, and ``on_bad`` (error | skip) says whether they stop the run. ``decode`` holds the
    keyword arguments of :func:`medsweep.data.images.read_image` (intensity windows); ``root``
    is the dataset folder (where check results are cached); ``ids`` names in-memory samples;
    ``declared`` says the class list was given (``data.classes``) rather than found.
    """

    labels: np.ndarray
    classes: list[str]
    name: str
    images: np.ndarray | None = None
    paths: list[str] | None = None
    groups: np.ndarray | None = None
    predefined: np.ndarray | None = None
    task: str = field(default="")
    ids: list[str] | None = None
    rejected: list[dict] = field(default_factory=list)
    on_bad: str = "error"
    decode: dict = field(default_factory=dict)
    root: str | None = None
    declared: bool = False

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError(f"{self.name}: give exactly one of images or paths")
        n = len(self.images) if self.images is not None else len(self.paths)
        if len(self.labels) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.labels)} labels")
        for attr in ("groups", "predefined", "ids"):
            value = getattr(self, attr)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {attr} has {len(value)} entries for {n} images")
        if self.predefined is not None:
            bad = sorted(set(np.unique(self.predefined)) - set(PARTS))
            if bad:
                raise ValueError(f"{self.name}: unknown split names {bad}; valid: {list(PARTS)}")
        if self.on_bad not in POLICIES:
            raise ValueError(
                f"data.on_bad={self.on_bad!r} is not valid; choose one of {list(POLICIES)}"
            )
        self.task = self.task or infer_task(self.labels, len(self.classes))

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
        from medsweep.data.images import read_image

        return read_image(self.paths[index], **self.decode)

    def sample_name(self, index: int) -> str:
        """The file path of sample ``index``, or its id (``file: part[k]``) for in-memory sets."""
        if self.paths is not None:
            return self.paths[index]
        if self.ids is not None:
            return self.ids[index]
        return f"{self.name}[{index}]"

    def subset(self, keep: np.ndarray, classes: list[str] | None = None) -> ImageSource:
        """The samples at ``keep``; with ``classes`` (a subset of the current ones), relabelled."""
        keep = np.asarray(keep, dtype=np.int64)
        labels = self.labels[keep]
        task = self.task
        if classes is not None and list(classes) != list(self.classes):
            position = [self.classes.index(c) for c in classes]
            if labels.ndim == 2:
                labels = labels[:, position]
            else:
                mapping = np.full(len(self.classes), -1, dtype=np.int64)
                mapping[position] = np.arange(len(position))
                labels = mapping[labels]
            if task != "multilabel":
                task = "binary" if len(classes) == 2 else "multiclass"
        return replace(
            self,
            labels=labels,
            classes=list(classes if classes is not None else self.classes),
            images=None if self.images is None else self.images[keep],
            paths=None if self.paths is None else [self.paths[i] for i in keep],
            groups=None if self.groups is None else self.groups[keep],
            predefined=None if self.predefined is None else self.predefined[keep],
            ids=None if self.ids is None else [self.ids[i] for i in keep],
            task=task,
        )

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


def infer_task(labels: np.ndarray, n_classes: int | None = None) -> str:
    """Binary for two classes, multiclass for more, multilabel for a multi-hot matrix.

    ``n_classes`` (the declared class list's length) decides over the labels present.
    """
    if labels.ndim == 2:
        return "multilabel"
    present = n_classes if n_classes else len(np.unique(labels))
    return "binary" if present <= 2 else "multiclass"


def rejection(item: str, reason: str, detail: str = "") -> dict:
    """One entry of ``ImageSource.rejected``."""
    return {"item": item, "reason": reason, "detail": detail}


def close_names(value: str, names: list[str]) -> str:
    """A hint naming the valid names closest to ``value`` (for label typos), or ''."""
    import difflib

    near = difflib.get_close_matches(value, names, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, near))}?" if near else ""


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


def per_class_subset(
    labels: np.ndarray, per_class: int | list[int] | None, seed: int, key: str
) -> np.ndarray:
    """Indices (sorted) of at most ``per_class`` samples of each class, drawn with ``seed``.

    ``per_class`` is one count for every class or a list with a count per class (an imbalanced
    subset); ``None`` keeps every sample. ``key`` names the config field in errors.
    """
    order = np.arange(len(labels))
    if per_class is None:
        return order
    classes = np.unique(labels)
    counts = [int(per_class)] * len(classes) if np.isscalar(per_class) else list(per_class)
    if len(counts) != len(classes) or min(counts) < 1:
        raise ValueError(
            f"{key}={per_class!r}: one positive count, or one per class ({len(classes)})"
        )
    rng = np.random.default_rng(seed)
    keep = []
    for cls, count in zip(classes, counts):
        members = order[labels == cls]
        if count > len(members):
            raise ValueError(f"{key}: class {cls} has {len(members)} samples, {count} asked")
        keep.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(keep))


def packaged_file(package: str, relative: str, option: str, install: str):
    """A file or folder shipped inside ``package``; a clear error naming ``data=option`` and the
    install command when the package is missing."""
    try:
        return resources.files(package).joinpath(*relative.split("/"))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"data={option} needs the {package} package: {install}") from exc


def lfw_faces(
    per_class: int | list[int] | None = None, seed: int = 0, on_bad: str = "skip"
) -> ImageSource:
    """200 photographs (25x25 grayscale): 100 faces from Labeled Faces in the Wild and 100 other
    image patches, shipped in the scikit-image wheel; a small binary task (positive: face).

    ``per_class`` draws a smaller or imbalanced subset (``[non-face, face]`` counts) with ``seed``.
    One non-face patch (index 152) is a single grey value; the data check leaves it out unless
    ``on_bad="error"``.
    """
    path = packaged_file("skimage", "data/lfw_subset.npy", "lfw_faces", "pip install scikit-image")
    with path.open("rb") as handle:
        images = np.load(handle, allow_pickle=False)  # (200, 25, 25) in [0, 1]
    labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)  # faces first, then others
    keep = per_class_subset(labels, per_class, seed, "data.source.per_class")
    return ImageSource(
        labels[keep],
        ["non-face", "face"],
        "lfw_faces",
        images=_to_uint8(images[keep], 1.0),
        on_bad=on_bad,
    )


def animal_mnist(
    per_class: int | list[int] | None = None, seed: int = 0, only: list[str] | None = None
) -> ImageSource:
    """10,000 animal silhouettes (28x28, 10 balanced classes) shipped in the ``animal-mnist`` wheel.

    ``only`` keeps those classes, in that order (two make a binary task: the second is the
    positive class); ``per_class`` draws a smaller or imbalanced subset (a count, or one per
    class in class order) with ``seed``.
    """
    folder = packaged_file(
        "animal_mnist",
        "data/Animal_MNIST",
        "animal_mnist",
        "pip install --no-deps animal-mnist==0.4",
    )
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
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
    classes = list(ANIMAL_CLASSES)
    if only is not None:
        only = [str(name) for name in only]
        unknown = [name for name in only if name not in classes]
        if unknown or len(set(only)) != len(only) or len(only) < 2:
            raise ValueError(
                f"data.source.only={only}: two or more distinct classes of {classes}"
                + (f"; unknown {unknown}{close_names(unknown[0], classes)}" if unknown else "")
            )
        old = [classes.index(name) for name in only]
        position = np.full(len(classes), -1)
        position[old] = np.arange(len(old))  # old class index -> its place in ``only``
        mask = np.isin(labels, old)
        images, labels, classes = images[mask], position[labels[mask]], only
    keep = per_class_subset(labels, per_class, seed, "data.source.per_class")
    return ImageSource(labels[keep], classes, "animal_mnist", images=images[keep])


NPZ_KEYS = ("train_images", "train_labels")


def npz(
    path: str | None = None,
    flag: str | None = None,
    root: str = "~/.medsweep/medmnist",
    size: int | None = None,
    download: bool = False,
    classes: list[str] | None = None,
    on_bad: str = "error",
) -> ImageSource:
    """A MedMNIST-format ``.npz`` file: a local ``path``, or a MedMNIST ``flag`` under ``root``.

    With ``download=True`` a missing flag file is fetched by the ``medmnist`` package. With
    ``classes`` declared, label ``k`` names ``classes[k]`` and any other label is rejected;
    without, the classes are ``0 .. max label``.
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
        sizes = [len(archive[f"{p}_labels"]) for p in parts]
    predefined = np.concatenate([np.full(n, p) for p, n in zip(parts, sizes)])
    ids = [f"{file.name}: {p}[{k}]" for p, n in zip(parts, sizes) for k in range(n)]
    if images.dtype != np.uint8:
        raise ValueError(f"{file}: images must be uint8, got {images.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    rejected: list[dict] = []
    if labels.ndim == 2:
        labels = labels.astype(np.float32)
        n_classes = labels.shape[1]
        if classes and len(classes) != n_classes:
            raise ValueError(
                f"data.classes has {len(classes)} names; {file} has {n_classes} label columns"
            )
        keep = np.ones(len(labels), dtype=bool)
    else:
        labels = labels.astype(np.int64)
        n_classes = len(classes) if classes else int(labels.max(initial=0)) + 1
        keep = (labels >= 0) & (labels < n_classes)
        for i in np.flatnonzero(~keep):
            valid = f"0..{n_classes - 1}" + (f" (data.classes={list(classes)})" if classes else "")
            rejected.append(
                rejection(ids[i], "unknown label", f"label {labels[i]}; valid: {valid}")
            )
    names = list(classes) if classes else [str(c) for c in range(n_classes)]
    return ImageSource(
        labels[keep],
        names,
        file.stem,
        images=images[keep],
        predefined=predefined[keep],
        ids=[ids[i] for i in np.flatnonzero(keep)],
        rejected=rejected,
        on_bad=on_bad,
        declared=bool(classes),
    )


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


def _class_folders(top: Path) -> list[Path]:
    return sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_folder(
    root: str,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    classes: list[str] | None = None,
    parts: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
    window: list[float] | None = None,
    dicom_windows: list[list[float]] | None = None,
    on_bad: str = "error",
    name: str | None = None,
) -> ImageSource:
    """A folder per class (``root/<class>/*.png``), or ``root/<part>/<class>/*``.

    ``parts`` maps part folder names to train / val / test (default: train, val or valid or
    validation, test); ``aliases`` maps folder names to class names; with ``classes`` declared,
    the class order is fixed, and images in any other folder are rejected as unknown labels.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"data.source.root: folder {base} does not exist")
    extensions = tuple(e.lower() for e in extensions)
    folders = dict(parts or PART_FOLDERS)
    split_dirs = [(base / f, folders[f]) for f in folders if (base / f).is_dir()]
    if parts and not split_dirs:
        raise FileNotFoundError(
            f"{base}: none of the part folders {list(parts)} exists (expected {base}/<part>/<class>/)"
        )
    tops = split_dirs or [(base, None)]
    aliases = dict(aliases or {})
    found = sorted({aliases.get(d.name, d.name) for top, _ in tops for d in _class_folders(top)})
    if not found and not classes:
        raise ValueError(f"{base}: no class folders found (expected {base}/<class>/<image>)")
    names = list(classes) if classes else found
    paths, labels, predefined, rejected = [], [], [], []
    for top, part in tops:
        for folder in _class_folders(top):
            cls = aliases.get(folder.name, folder.name)
            files = sorted(
                f
                for f in folder.rglob("*")
                if f.is_file() and f.suffix.lower() in extensions and not f.name.startswith(".")
            )
            if cls not in names:
                hint = f"class folder {folder.name!r} is not in data.classes {names}"
                rejected += [rejection(str(f), "unknown label", hint) for f in files]
                continue
            paths += [str(f) for f in files]
            labels += [names.index(cls)] * len(files)
            predefined += [part] * len(files)
    return ImageSource(
        np.asarray(labels, dtype=np.int64),
        names,
        name or base.name,
        paths=paths,
        predefined=np.asarray(predefined) if split_dirs else None,
        rejected=rejected,
        on_bad=on_bad,
        declared=bool(classes),
        decode=_decode_options(window, dicom_windows),
        root=str(base),
    )


def _decode_options(window, dicom_windows) -> dict:
    options = {}
    if window is not None:
        if len(window) != 2 or float(window[0]) >= float(window[1]):
            raise ValueError(
                f"data.source.window={list(window)} must be [low, high] with low < high"
            )
        options["window"] = [float(v) for v in window]
    if dicom_windows is not None:
        for w in dicom_windows:
            if len(w) != 2 or float(w[1]) <= 0:
                raise ValueError(
                    f"data.source.dicom_windows entry {list(w)} must be [centre, width] with width > 0"
                )
        options["dicom_windows"] = [[float(c), float(w)] for c, w in dicom_windows]
    return options


def _row_labels(
    table, file: Path, label_column, label_columns, classes, one_hot, rows: list[int]
) -> tuple[np.ndarray, list[str], dict[int, tuple[str, str]]]:
    """Labels of each row, the class names, and rows to reject (row -> (reason, detail))."""
    import pandas as pd

    bad: dict[int, tuple[str, str]] = {}
    if label_columns:
        columns = [str(c) for c in label_columns]
        raw = table[columns]
        hot = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
        wrong = (~np.isin(hot, (0.0, 1.0)) & ~np.isnan(hot)) | (
            np.isnan(hot) & raw.notna().to_numpy()
        )
        if wrong.any():
            r, c = np.argwhere(wrong)[0]
            raise ValueError(
                f"{file}: row {rows[r]}, column {columns[c]!r} holds {raw.iat[r, c]!r}; "
                f"label_columns {columns} must hold only 0 and 1"
            )
        for r in np.flatnonzero(np.isnan(hot).any(1)):
            bad[int(r)] = ("no label", f"row {rows[r]} has an empty label column")
        hot = np.nan_to_num(hot)
        names = list(classes) if classes else columns
        unknown = [c for c in names if c not in columns]
        if unknown:
            raise ValueError(
                f"data.classes {unknown} are not label columns of {file}; columns: {columns}"
            )
        extra = [i for i, c in enumerate(columns) if c not in names]
        for r in np.flatnonzero(hot[:, extra].sum(1) > 0) if extra else []:
            marked = [columns[i] for i in extra if hot[r, i]]
            bad.setdefault(
                int(r), ("unknown label", f"row {rows[r]} is marked {marked}; data.classes={names}")
            )
        hot = hot[:, [columns.index(c) for c in names]]
        sums = hot.sum(1)
        single = bool((sums == 1).all()) if one_hot is None else bool(one_hot)
        if not single:
            return hot, names, bad
        for r in np.flatnonzero(sums != 1):
            what = "no class marked" if sums[r] == 0 else f"{int(sums[r])} classes marked"
            bad.setdefault(
                int(r), ("no label" if sums[r] == 0 else "several labels", f"row {rows[r]}: {what}")
            )
        return hot.argmax(1).astype(np.int64), names, bad
    values = table[label_column]
    text = values.astype(str).str.strip()
    for r in np.flatnonzero(values.isna().to_numpy()):
        bad[int(r)] = ("no label", f"row {rows[r]} has no value in column {label_column!r}")
    present = sorted(set(text[~values.isna()]))
    names = list(classes) if classes else present
    for r in np.flatnonzero(~text.isin(names).to_numpy()):
        if int(r) not in bad:
            detail = f"row {rows[r]}: {text.iloc[r]!r} is not in data.classes {names}"
            bad[int(r)] = ("unknown label", detail + close_names(text.iloc[r], names))
    index = {c: i for i, c in enumerate(names)}
    return text.map(lambda v: index.get(v, -1)).to_numpy(np.int64), names, bad


def csv_manifest(
    path: str,
    image_column: str = "image",
    label_column: str | None = "label",
    label_columns: list[str] | None = None,
    group_column: str | None = None,
    split_column: str | None = None,
    root: str | None = None,
    image_extension: str = "",
    classes: list[str] | None = None,
    one_hot: bool | None = None,
    window: list[float] | None = None,
    dicom_windows: list[list[float]] | None = None,
    on_bad: str = "error",
    name: str | None = None,
) -> ImageSource:
    """A manifest CSV: an image-path column and one label column or one-/multi-hot columns.

    Rows with no label, a label outside ``classes`` (when declared), a repeat of an earlier
    row, or labels that contradict another row for the same image are rejected (reported by
    the pre-flight check). ``one_hot`` forces (true) or forbids (false) one class per row for
    ``label_columns``; by default the columns are one-hot when every row marks exactly one.
    """
    import pandas as pd

    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"data.source.path: manifest {file} does not exist")
    table = pd.read_csv(file, dtype={image_column: str})
    return manifest_table(
        table,
        file,
        image_column,
        label_column,
        label_columns,
        group_column,
        split_column,
        Path(root).expanduser() if root else file.parent,
        image_extension,
        classes,
        one_hot,
        _decode_options(window, dicom_windows),
        on_bad,
        name or file.stem,
    )


def manifest_table(
    table,
    file: Path,
    image_column: str,
    label_column: str | None,
    label_columns: list[str] | None,
    group_column: str | None,
    split_column: str | None,
    base: Path,
    image_extension: str = "",
    classes: list[str] | None = None,
    one_hot: bool | None = None,
    decode: dict | None = None,
    on_bad: str = "error",
    name: str | None = None,
    rows: list[int] | None = None,
    locate=None,
) -> ImageSource:
    """An ImageSource from a table of image names and labels (the body of ``csv_manifest``).

    ``rows`` gives each table row's line in ``file`` (default: row + 2); ``locate`` maps an
    image name to its path (default: ``base / (name + image_extension)``).
    """
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
    name = name or file.stem
    table = table.reset_index(drop=True)
    rows = list(rows) if rows is not None else [i + 2 for i in range(len(table))]
    labels, names, bad = _row_labels(
        table, file, label_column, label_columns, classes, one_hot, rows
    )
    images = table[image_column]
    for r in np.flatnonzero(images.isna().to_numpy()):
        bad[int(r)] = ("no image", f"row {rows[r]} has no value in column {image_column!r}")
    locate = locate or (lambda value: str(base / f"{value}{image_extension}"))
    paths = [None if pd_isna(v) else locate(str(v).strip()) for v in images]
    if split_column:
        splits = table[split_column].astype(str).str.strip().to_numpy()
        for r in np.flatnonzero(~np.isin(splits, PARTS)):
            bad.setdefault(
                int(r),
                (
                    "unknown split",
                    f"row {rows[r]}: {split_column}={splits[r]!r}; valid: {list(PARTS)}",
                ),
            )
    # the same image listed twice: an exact repeat is a duplicate row, different labels conflict
    first: dict[str, int] = {}
    for r, p in enumerate(paths):
        if p is None or r in bad:
            continue
        if p not in first:
            first[p] = r
            continue
        f = first[p]
        same_label = np.array_equal(labels[r], labels[f])
        same_split = not split_column or splits[r] == splits[f]
        if same_label and same_split:
            bad[r] = ("duplicate row", f"row {rows[r]} repeats row {rows[f]}")
        else:
            what = "labels" if not same_label else f"{split_column} values"
            bad[r] = (
                "conflicting labels",
                f"rows {rows[f]} and {rows[r]} give {p} different {what}",
            )
            bad.setdefault(f, bad[r])
    keep = np.asarray([r for r in range(len(table)) if r not in bad], dtype=np.int64)
    rejected = [
        rejection(paths[r] or f"{file}: row {rows[r]}", reason, detail)
        for r, (reason, detail) in sorted(bad.items())
    ]
    groups = None
    if group_column:
        values = table[group_column]
        groups = np.asarray(
            [f"{name}:row{rows[r]}" if pd_isna(v) else str(v) for r, v in enumerate(values)]
        )[keep]
    return ImageSource(
        labels[keep],
        names,
        name,
        paths=[paths[r] for r in keep],
        groups=groups,
        predefined=splits[keep] if split_column else None,
        rejected=rejected,
        on_bad=on_bad,
        declared=bool(classes),
        decode=dict(decode or {}),
        root=str(base),
    )


def pd_isna(value) -> bool:
    """True for a missing table cell (None, NaN, pandas NA)."""
    import pandas as pd

    return bool(pd.isna(value))
