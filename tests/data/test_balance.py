"""Class balancing: loss weights, pos_weight, weighted sampling and duplication, by hand and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, compose, conf_options, run
from sklearn.datasets import load_digits
from torch.utils.data import WeightedRandomSampler

from medsweep.data.datamodule import ImageDataModule
from medsweep.data.folds import Holdout
from medsweep.data.sampling import Balance, class_weights, duplicate_minority, pos_weight
from medsweep.data.sources import ImageSource

# 10 labels: class 0 six times, class 1 three times, class 2 once (N = 10, K = 3)
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])


def test_inverse_class_weights_by_hand() -> None:
    # N / (K n_c) = 10/18, 10/9, 10/3 = 0.5556, 1.1111, 3.3333 (sum 5.0); scaled to sum to K = 3:
    # x 3/5 -> 0.3333, 0.6667, 2.0
    weights = class_weights(LABELS, 3, "inverse")
    np.testing.assert_allclose(weights, [1 / 3, 2 / 3, 2.0])
    assert weights.sum() == pytest.approx(3.0)


def test_effective_number_class_weights_by_hand() -> None:
    # beta = 0.9: (1 - beta) / (1 - beta^n) for n = 6, 3, 1
    #   0.1 / (1 - 0.531441) = 0.2134203, 0.1 / (1 - 0.729) = 0.3690037, 0.1 / 0.1 = 1.0
    # sum 1.5824240; x 3 / 1.5824240 -> 0.4046077, 0.6995667, 1.8958257
    weights = class_weights(LABELS, 3, "effective", beta=0.9)
    np.testing.assert_allclose(weights, [0.4046077, 0.6995667, 1.8958257], atol=1e-6)


def test_class_weights_go_to_the_loss_as_weight() -> None:
    kwargs = Balance(class_weights="inverse").loss_kwargs(LABELS, "multiclass", 3)
    assert set(kwargs) == {"weight"}
    torch.testing.assert_close(kwargs["weight"], torch.tensor([1 / 3, 2 / 3, 2.0]))


def test_class_weights_name_the_key_when_invalid() -> None:
    with pytest.raises(ValueError, match="balance.class_weights"):
        Balance(class_weights="sqrt")
    with pytest.raises(ValueError, match="balance.beta"):
        Balance(class_weights="effective", beta=1.0)


def test_pos_weight_is_negatives_over_positives() -> None:
    binary = np.array([1, 0, 0, 0, 1, 0, 0, 0])  # 6 negatives / 2 positives = 3
    np.testing.assert_allclose(pos_weight(binary), [3.0])
    multi = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=np.float32)
    # label 0: 3 / 1 = 3; label 1: 3 / 1 = 3; label 2: 1 / 3
    np.testing.assert_allclose(pos_weight(multi), [3.0, 3.0, 1 / 3])
    kwargs = Balance(pos_weight=True).loss_kwargs(binary, "binary", 2)
    torch.testing.assert_close(kwargs["pos_weight"], torch.tensor([3.0]))


def test_pos_weight_refuses_a_multiclass_task_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"balance\.pos_weight.*multiclass"):
        Balance(pos_weight=True).loss_kwargs(LABELS, "multiclass", 3)


def test_weighted_sampler_draws_classes_evenly() -> None:
    labels = np.repeat([0, 1, 2], [2700, 270, 30])  # 90% / 9% / 1%
    sampler = Balance(oversample=True, seed=0).sampler(labels)
    assert isinstance(sampler, WeightedRandomSampler)
    drawn = np.bincount(labels[np.fromiter(iter(sampler), dtype=np.int64)], minlength=3)
    assert drawn.sum() == len(labels)
    # each class expects 1000 draws (binomial std ~ 26); allow 10%
    np.testing.assert_allclose(drawn, [1000, 1000, 1000], rtol=0.10)
    assert Balance().sampler(labels) is None


def test_duplicate_minority_spreads_copies_evenly() -> None:
    indices = np.arange(100, 110)
    out = duplicate_minority(indices, LABELS, seed=0)
    counts = np.bincount(LABELS[np.searchsorted(indices, out)])
    np.testing.assert_array_equal(counts, [6, 6, 6])
    copies = np.bincount(out - 100, minlength=10)
    # class 1 (3 samples -> 6) twice each; class 2 (1 sample -> 6) six times; class 0 untouched
    np.testing.assert_array_equal(copies, [1] * 6 + [2, 2, 2, 6])
    with pytest.raises(ValueError, match="balance.duplicate"):
        duplicate_minority(indices[:4], np.eye(4)[:, :3], seed=0)


def imbalanced_digits() -> ImageSource:
    """Digits 0, 1, 2 kept 178 / 60 / 30 times: a small imbalanced in-memory source."""
    bunch = load_digits()
    keep = np.concatenate(
        [np.flatnonzero(bunch.target == c)[:n] for c, n in [(0, 178), (1, 60), (2, 30)]]
    )
    images = np.clip(bunch.images[keep] * 16, 0, 255).astype(np.uint8)
    return ImageSource(
        bunch.target[keep].astype(np.int64), ["0", "1", "2"], "digits012", images=images
    )


def _datamodule(source: ImageSource, balance: Balance) -> ImageDataModule:
    dm = ImageDataModule(
        source,
        Holdout(seed=0),
        image_size=8,
        seed=0,
        batch_size=32,
        train_sampler=balance.sampler,
        train_index_hook=balance.train_indices,
    )
    dm.setup()
    return dm


def test_duplicate_oversampling_touches_the_training_fold_only() -> None:
    source = imbalanced_digits()
    plain = _datamodule(source, Balance())
    dup = _datamodule(source, Balance(duplicate=True, seed=0))
    before = np.bincount(plain.datasets["train"].labels(), minlength=3)
    after = np.bincount(dup.datasets["train"].labels(), minlength=3)
    assert before[0] > before[1] > before[2]
    np.testing.assert_array_equal(after, [before[0]] * 3)
    # the copies are training samples: no new index, nothing from validation or test
    np.testing.assert_array_equal(np.unique(dup.datasets["train"].indices), plain.splits.train)
    for part in ("val", "test"):
        np.testing.assert_array_equal(dup.datasets[part].indices, plain.datasets[part].indices)
    assert len(dup.train_dataloader().dataset) == after.sum()


def test_oversampling_loader_balances_an_epoch() -> None:
    dm = _datamodule(imbalanced_digits(), Balance(oversample=True, seed=0))
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler.sampler, WeightedRandomSampler)  # drawn per epoch
    labels = torch.cat([y for _, y in loader]).numpy()
    assert len(labels) == len(dm.datasets["train"])
    share = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.1)


def test_every_balance_option_is_tested_here() -> None:
    assert set(conf_options("balance")) == {
        "none",
        "class_weights",
        "pos_weight",
        "oversample",
        "oversample_duplicate",
    }


@pytest.mark.parametrize(
    "overrides",
    [
        ["balance=none"],
        ["balance=class_weights"],
        ["balance=oversample"],
        ["balance=oversample_duplicate"],
        ["balance=pos_weight", "data=digits_binary", "loss=bce"],
        ["balance=pos_weight", "data=digits_multilabel", "loss=bce"],
    ],
    ids=lambda o: " ".join(o),
)
def test_balance_option_trains_end_to_end(overrides: list[str], tmp_path: Path) -> None:
    record = run([*FAST, *overrides], tmp_path)
    assert record["status"] == "ok"


def test_pos_weight_on_the_default_multiclass_data_fails_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"balance\.pos_weight"):
        run([*FAST, "balance=pos_weight"], tmp_path)


@pytest.mark.parametrize(
    ("overrides", "attr"),
    [
        (["balance=pos_weight", "data=digits_binary", "loss=bce"], "pos_weight"),
        (["balance=class_weights"], "weight"),
    ],
)
def test_pipeline_computes_loss_balancing_from_the_training_fold(
    overrides: list[str], attr: str, tmp_path: Path
) -> None:
    from medsweep.pipeline import build_datamodule, build_model, build_module

    cfg = compose([*FAST, *overrides], tmp_path)
    dm = build_datamodule(cfg, tmp_path)
    module = build_module(cfg, dm, build_model(cfg, dm))
    train = dm.datasets["train"].labels()
    if attr == "pos_weight":
        expected = [(train == 0).sum() / (train == 1).sum()]
    else:
        expected = class_weights(train, len(dm.classes), "inverse")
    torch.testing.assert_close(
        getattr(module.loss_fn, attr), torch.tensor(expected, dtype=torch.float32)
    )
