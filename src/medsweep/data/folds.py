"""Fold assignment: hold-out and k-fold splits into train / val / test, checked for leaks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsweep.data.sources import ImageSource


@dataclass(frozen=True)
class Splits:
    """Indices into a source for each part; the test part may be empty."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        """The three parts by name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        """Number of samples in each part."""
        return {k: int(len(v)) for k, v in self.parts().items()}


def _kfold(labels: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int):
    """The scikit-learn / iterative-stratification splitter that fits the labels and groups."""
    # scikit-learn (with scipy and pandas: about 0.4 s) is imported by the runs that split only,
    # not by those that read a source's predefined train / val / test parts
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

    if labels.ndim == 2:
        if groups is not None:
            return GroupKFold(n_splits=n_splits)
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        return MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if groups is not None:
        return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _hold_out(
    index: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, held) with ``fraction`` held out, stratified and group-aware."""
    if fraction <= 0:
        return index, index[:0]
    if not 0 < fraction < 1:
        raise ValueError(f"a split fraction must lie in [0, 1); got {fraction}")
    y = labels[index]
    g = None if groups is None else groups[index]
    if g is None and y.ndim == 1:
        from sklearn.model_selection import train_test_split

        rest, held = train_test_split(index, test_size=fraction, stratify=y, random_state=seed)
        return np.sort(rest), np.sort(held)
    if g is None:
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(
            n_splits=1, test_size=fraction, random_state=seed
        )
        rest, held = next(splitter.split(np.zeros(len(index)), y))
        return np.sort(index[rest]), np.sort(index[held])
    n_splits = max(2, round(1 / fraction))
    rest, held = next(_kfold(y, g, n_splits, seed).split(np.zeros(len(index)), y, g))
    return np.sort(index[rest]), np.sort(index[held])


class Holdout:
    """The source's predefined split, or a stratified random train / val / test split."""

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42):
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.index = 0
        self.n_folds = 1

    def split(self, source: ImageSource) -> Splits:
        """Assign every sample of ``source`` to one part."""
        labels, groups = source.stratify_labels(), source.groups
        everything = np.arange(len(source))
        if source.predefined is not None:
            parts = {p: everything[source.predefined == p] for p in ("train", "val", "test")}
            if not len(parts["val"]):
                parts["train"], parts["val"] = _hold_out(
                    parts["train"], labels, groups, self.val_fraction, self.seed
                )
            return Splits(parts["train"], parts["val"], parts["test"])
        rest, test = _hold_out(everything, labels, groups, self.test_fraction, self.seed)
        val_share = self.val_fraction / (1 - self.test_fraction)
        train, val = _hold_out(rest, labels, groups, val_share, self.seed)
        return Splits(train, val, test)


class KFold:
    """A fixed test set held out once, then k folds of the rest; ``index`` picks the validation fold.

    StratifiedKFold for single-label data, MultilabelStratifiedKFold for multi-label data,
    StratifiedGroupKFold (GroupKFold for multi-label) when the source has groups.
    """

    def __init__(
        self, n_folds: int = 5, index: int = 0, seed: int = 42, test_fraction: float = 0.15
    ):
        if n_folds < 2:
            raise ValueError(f"fold.n_folds must be at least 2; got {n_folds}")
        if not 0 <= index < n_folds:
            raise ValueError(f"fold.index={index} is outside range(fold.n_folds={n_folds})")
        self.n_folds = n_folds
        self.index = index
        self.seed = seed
        self.test_fraction = test_fraction

    def split(self, source: ImageSource) -> Splits:
        """Assign every sample of ``source`` to one part for fold ``index``."""
        labels, groups = source.stratify_labels(), source.groups
        everything = np.arange(len(source))
        if source.predefined is not None and (source.predefined == "test").any():
            test = everything[source.predefined == "test"]
            pool = everything[source.predefined != "test"]
        else:
            pool, test = _hold_out(everything, labels, groups, self.test_fraction, self.seed)
        y = labels[pool]
        g = None if groups is None else groups[pool]
        folds = list(_kfold(y, g, self.n_folds, self.seed).split(np.zeros(len(pool)), y, g))
        train, val = folds[self.index]
        return Splits(np.sort(pool[train]), np.sort(pool[val]), np.sort(test))


def check_disjoint(splits: Splits, groups: np.ndarray | None = None, source: str = "data") -> None:
    """Refuse any sample, or any group, that falls in two of train / val / test."""
    names = list(splits.parts())
    parts = splits.parts()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = np.intersect1d(parts[a], parts[b])
            if len(shared):
                raise ValueError(
                    f"{source}: sample {int(shared[0])} is in both {a} and {b} "
                    f"({len(shared)} shared samples)"
                )
            if groups is not None:
                shared_groups = np.intersect1d(groups[parts[a]], groups[parts[b]])
                if len(shared_groups):
                    raise ValueError(
                        f"{source}: group {str(shared_groups[0])!r} is in both {a} and {b} "
                        f"({len(shared_groups)} shared groups)"
                    )


def save_splits(splits: Splits, path: Path, meta: dict) -> None:
    """Write the split as index lists beside the run (``splits.json``)."""
    payload = {**meta, **{k: v.tolist() for k, v in splits.parts().items()}}
    path.write_text(json.dumps(payload))


def load_splits(path: Path) -> Splits:
    """Read a split written by ``save_splits``."""
    data = json.loads(Path(path).read_text())
    return Splits(*(np.asarray(data[k], dtype=np.int64) for k in ("train", "val", "test")))
