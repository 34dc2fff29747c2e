"""Fold assignment: stratified, group-exclusive, deterministic, with one fixed test set."""

from __future__ import annotations

import numpy as np
import pytest

from medsweep.data.folds import Holdout, KFold, Splits, check_disjoint
from medsweep.data.sources import ImageSource, digits


def _source(labels, groups=None) -> ImageSource:
    labels = np.asarray(labels)
    return ImageSource(
        labels,
        [str(i) for i in range(labels.shape[1] if labels.ndim == 2 else labels.max() + 1)],
        "synthetic",
        images=np.zeros((len(labels), 4, 4), np.uint8),
        groups=groups,
    )


def test_kfold_stratified_within_one_sample_per_class():
    source = digits()
    counts = []
    for index in range(5):
        splits = KFold(n_folds=5, index=index, seed=3, test_fraction=0.15).split(source)
        counts.append(np.bincount(source.labels[splits.val], minlength=10))
    counts = np.array(counts)
    assert (counts.max(0) - counts.min(0) <= 1).all()


def test_kfold_test_set_fixed_and_disjoint_from_every_fold():
    source = digits()
    splits = [KFold(n_folds=5, index=i, seed=3).split(source) for i in range(5)]
    for s in splits:
        assert np.array_equal(s.test, splits[0].test)
        check_disjoint(s)
        assert len(s.train) + len(s.val) + len(s.test) == len(source)
    vals = np.concatenate([s.val for s in splits])
    assert (
        len(np.unique(vals)) == len(vals) == len(source) - len(splits[0].test)
    )  # folds partition the pool


def test_splits_are_deterministic_per_seed():
    source = digits()
    a = KFold(n_folds=5, index=2, seed=11).split(source)
    b = KFold(n_folds=5, index=2, seed=11).split(source)
    c = KFold(n_folds=5, index=2, seed=12).split(source)
    assert all(np.array_equal(x, y) for x, y in zip(a.parts().values(), b.parts().values()))
    assert not np.array_equal(a.val, c.val)
    h1, h2 = Holdout(seed=5).split(source), Holdout(seed=5).split(source)
    assert np.array_equal(h1.test, h2.test) and np.array_equal(h1.val, h2.val)


def test_groups_never_cross_parts():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 5)  # 60 patients with 5 images each
    labels = np.repeat(rng.integers(0, 3, 60), 5)
    source = _source(labels, groups=groups.astype(str))
    for index in range(4):
        splits = KFold(n_folds=4, index=index, seed=0).split(source)
        check_disjoint(splits, source.groups)
        parts = [set(source.groups[p]) for p in splits.parts().values()]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    holdout = Holdout(seed=0).split(source)
    check_disjoint(holdout, source.groups)


def test_multilabel_kfold_uses_iterative_stratification():
    source = digits("multilabel")
    positives = []
    for index in range(3):
        splits = KFold(n_folds=3, index=index, seed=0).split(source)
        positives.append(source.labels[splits.val].mean(0))
    spread = np.ptp(np.array(positives), axis=0)
    assert (spread < 0.02).all()  # each label's prevalence nearly equal across folds


def test_check_disjoint_names_the_sample_and_group():
    with pytest.raises(ValueError, match="sample 3 is in both train and val"):
        check_disjoint(Splits(np.array([1, 2, 3]), np.array([3, 4]), np.array([], int)))
    groups = np.array(["p0", "p0", "p1", "p1"])
    with pytest.raises(ValueError, match="group 'p0' is in both train and val"):
        check_disjoint(Splits(np.array([0, 2]), np.array([1]), np.array([3])), groups)


def test_kfold_rejects_bad_index():
    with pytest.raises(ValueError, match=r"fold.index=5 is outside range\(fold.n_folds=5\)"):
        KFold(n_folds=5, index=5)


def test_predefined_split_is_kept():
    predefined = np.array(["train"] * 30 + ["val"] * 10 + ["test"] * 10)
    labels = np.tile([0, 1], 25)
    source = ImageSource(
        labels, ["a", "b"], "pre", images=np.zeros((50, 4, 4), np.uint8), predefined=predefined
    )
    splits = Holdout().split(source)
    assert np.array_equal(splits.val, np.arange(30, 40)) and np.array_equal(
        splits.test, np.arange(40, 50)
    )
