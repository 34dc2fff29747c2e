"""Offline photographs (scikit-image's LFW subset) and seeded per-class subsets of packaged sets."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from helpers import compose

from medsweep.data.sources import animal_mnist, lfw_faces, per_class_subset
from medsweep.pipeline import build_datamodule


def test_lfw_faces_are_the_packaged_photographs_faces_first():
    raw = np.load(resources.files("skimage") / "data" / "lfw_subset.npy", allow_pickle=False)
    source = lfw_faces()
    assert source.classes == ["non-face", "face"]
    assert np.bincount(source.labels).tolist() == [100, 100]
    assert source.labels[:100].tolist() == [1] * 100  # scikit-image lists the faces first
    np.testing.assert_array_equal(source.images, np.rint(raw * 255).astype(np.uint8))


def test_per_class_subset_draws_exact_counts_reproducibly():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    keep = per_class_subset(labels, [2, 5, 7], seed=3, key="k")
    assert np.bincount(labels[keep]).tolist() == [2, 5, 7]
    assert len(set(keep.tolist())) == 14 and (np.diff(keep) > 0).all()
    np.testing.assert_array_equal(keep, per_class_subset(labels, [2, 5, 7], seed=3, key="k"))
    assert not np.array_equal(keep, per_class_subset(labels, [2, 5, 7], seed=4, key="k"))
    assert np.bincount(labels[per_class_subset(labels, 4, 0, "k")]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(per_class_subset(labels, None, 0, "k"), np.arange(60))


@pytest.mark.parametrize(
    ("per_class", "message"),
    [([1, 2], "one per class"), (0, "positive"), ([1, 2, 31], "30 samples")],
)
def test_per_class_subset_errors_name_the_key(per_class, message):
    labels = np.repeat(np.arange(3), [10, 20, 30])
    with pytest.raises(ValueError, match=message) as error:
        per_class_subset(labels, per_class, 0, "data.source.per_class")
    assert "data.source.per_class" in str(error.value)


def test_imbalanced_animal_subset_through_the_config(tmp_path):
    counts = [40, 32, 26, 20, 16, 14, 12, 11, 10, 10]
    whole = animal_mnist()
    source = animal_mnist(per_class=counts, seed=1)
    assert np.bincount(source.labels).tolist() == counts
    # every kept image is one of the package's images with the same label
    index = {img.tobytes(): lab for img, lab in zip(whole.images, whole.labels)}
    assert all(index[img.tobytes()] == lab for img, lab in zip(source.images, source.labels))
    cfg = compose(
        [
            "data=animal_mnist",
            f"data.source.per_class=[{','.join(map(str, counts))}]",
            "data.source.seed=1",
        ],
        tmp_path,
    )
    dm = build_datamodule(cfg)
    assert np.bincount(dm.source.labels).tolist() == counts


def test_animal_class_subset_is_a_binary_task_with_the_second_class_positive(tmp_path):
    whole = animal_mnist()
    source = animal_mnist(only=["dog", "cat"], per_class=[24, 6], seed=2)
    assert source.classes == ["dog", "cat"]
    assert np.bincount(source.labels).tolist() == [24, 6]
    cat, dog = whole.classes.index("cat"), whole.classes.index("dog")
    cats = {img.tobytes() for img in whole.images[whole.labels == cat]}
    dogs = {img.tobytes() for img in whole.images[whole.labels == dog]}
    assert all(
        (img.tobytes() in cats) == bool(lab) for img, lab in zip(source.images, source.labels)
    )
    assert all(img.tobytes() in cats | dogs for img in source.images)
    with pytest.raises(ValueError, match="did you mean 'dog'"):
        animal_mnist(only=["dgo", "cat"])
    dm = build_datamodule(compose(["data=animal_mnist_binary"], tmp_path))
    assert dm.task == "binary" and dm.classes == ["dog", "cat"]
    assert np.bincount(dm.source.labels).tolist() == [240, 60]
