"""MixUp / CutMix on dense targets: convex mixtures, target sums, odd batches, config wiring."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FAST, conf_options, run
from omegaconf import OmegaConf

from medsweep.data.mixing import MixUpCutMix
from medsweep.pipeline import build_batch_transform, compose_config

K = 4
B = 8


def batch(n: int = B, k: int = K) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images, and one-hot targets where sample i and its partner B-1-i differ."""
    x = torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    classes = torch.arange(n) % k
    return x, F.one_hot(classes, k).float(), classes


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixup_makes_convex_mixtures_with_rows_summing_to_one(mode: str) -> None:
    x, target, classes = batch()
    mix = MixUpCutMix("multiclass", K, mixup_alpha=1.0, mode=mode, seed=0)
    mixed_x, mixed_t = mix(x, target)
    torch.testing.assert_close(mixed_t.sum(1), torch.ones(B))
    lam = mixed_t[torch.arange(B), classes]  # weight of each sample's own class
    assert ((lam > 0) & (lam <= 1)).all() and (lam < 1).any()
    partner = x.flip(0)
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * partner
    torch.testing.assert_close(mixed_x, expected)
    torch.testing.assert_close(mixed_t, lam[:, None] * target + (1 - lam[:, None]) * target.flip(0))
    assert not torch.equal(mixed_x, x)  # the caller's batch is left as it was
    torch.testing.assert_close(x, batch()[0])


def test_cutmix_pastes_a_box_whose_area_sets_lambda() -> None:
    x, target, classes = batch()
    mixed_x, mixed_t = MixUpCutMix("multiclass", K, cutmix_alpha=1.0, seed=3)(x, target)
    lam = mixed_t[torch.arange(B), classes]
    own = (mixed_x == x).all(dim=1)  # (B, H, W): pixels kept from the sample itself
    pasted = (mixed_x == x.flip(0)).all(dim=1)
    assert (own | pasted).all()
    torch.testing.assert_close(own.float().mean(dim=(1, 2)), lam)
    torch.testing.assert_close(mixed_t.sum(1), torch.ones(B))


def test_label_smoothing_follows_timm() -> None:
    x, target, _ = batch()
    mix = MixUpCutMix("multiclass", K, mixup_alpha=0.2, prob=0.0, label_smoothing=0.1, seed=0)
    mixed_x, mixed_t = mix(x, target)  # prob 0: never mixed, only smoothed
    torch.testing.assert_close(mixed_x, x)
    # off = 0.1 / 4 = 0.025; on = 1 - 0.1 + 0.025 = 0.925
    torch.testing.assert_close(mixed_t, target * 0.925 + (1 - target) * 0.025)


def _mixup_lambda(x: torch.Tensor, mixed: torch.Tensor) -> float:
    """The batch-mode MixUp weight: mixed = lam x + (1 - lam) flip(x), solved by least squares."""
    d = x - x.flip(0)
    return float(((mixed - x.flip(0)) * d).sum() / (d * d).sum())


@pytest.mark.parametrize(
    ("task", "target"),
    [
        ("binary", torch.tensor([[1.0], [0.0], [0.0], [1.0], [1.0], [0.0], [0.0], [0.0]])),
        (
            "multilabel",
            torch.tensor(
                [
                    [1, 0, 1],
                    [0, 0, 1],
                    [1, 1, 0],
                    [0, 1, 0],
                    [1, 1, 1],
                    [0, 0, 0],
                    [1, 0, 0],
                    [0, 1, 1],
                ],
                dtype=torch.float32,
            ),
        ),
    ],
)
def test_dense_targets_mix_with_the_image_lambda(task: str, target: torch.Tensor) -> None:
    x = batch()[0]
    mix = MixUpCutMix(
        task, 2 if task == "binary" else 3, mixup_alpha=1.0, label_smoothing=0.1, seed=1
    )
    mixed_x, mixed_t = mix(x, target)
    lam = _mixup_lambda(x, mixed_x)
    assert 0 < lam < 1
    smooth = target * 0.9 + 0.05  # toward 0.5: y (1 - s) + s / 2
    torch.testing.assert_close(mixed_t, lam * smooth + (1 - lam) * smooth.flip(0))
    assert mixed_t.shape == target.shape


def test_odd_batch_mixes_all_but_the_last_sample() -> None:
    x, target, _ = batch(7)
    mixed_x, mixed_t = MixUpCutMix("multiclass", K, mixup_alpha=1.0, seed=0)(x, target)
    torch.testing.assert_close(mixed_x[-1], x[-1])
    torch.testing.assert_close(mixed_t[-1], target[-1])
    head_x, head_t = MixUpCutMix("multiclass", K, mixup_alpha=1.0, seed=0)(x[:6], target[:6])
    torch.testing.assert_close(mixed_x[:6], head_x)
    torch.testing.assert_close(mixed_t[:6], head_t)
    one_x, one_t = MixUpCutMix("multiclass", K, mixup_alpha=1.0, label_smoothing=0.2)(
        x[:1], target[:1]
    )
    torch.testing.assert_close(one_x, x[:1])
    torch.testing.assert_close(one_t.sum(1), torch.ones(1))


def test_a_seed_fixes_the_mixing_without_touching_numpy_global_stream() -> None:
    x, target, _ = batch()
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    first = MixUpCutMix("multiclass", K, mixup_alpha=0.4, cutmix_alpha=1.0, seed=7)
    second = MixUpCutMix("multiclass", K, mixup_alpha=0.4, cutmix_alpha=1.0, seed=7)
    for _ in range(3):
        a, b = first(x, target), second(x, target)
        torch.testing.assert_close(a, b)
    assert np.random.rand() == expected_draw


def test_disabled_and_bad_inputs() -> None:
    x, target, _ = batch()
    off = MixUpCutMix("multiclass", K)
    assert not off.enabled
    assert off(x, target)[0] is x
    with pytest.raises(ValueError, match="augmentation.batch_transform"):
        MixUpCutMix("multiclass", K, mixup_alpha=0.2)(x, target[:, :3])
    with pytest.raises(ValueError, match=r"augmentation\.batch_transform\.mode"):
        MixUpCutMix("multiclass", K, mixup_alpha=0.2, mode="rows")


@pytest.fixture(scope="module")
def reference_block():
    return OmegaConf.to_container(
        compose_config(["augmentation=none"]).augmentation.batch_transform
    )


DIGITS = SimpleNamespace(task="multiclass", classes=[str(c) for c in range(10)])


@pytest.mark.parametrize("preset", conf_options("augmentation"))
def test_every_preset_carries_the_same_batch_transform_off_by_default(
    preset: str, reference_block
) -> None:
    cfg = compose_config([f"augmentation={preset}"])
    assert OmegaConf.to_container(cfg.augmentation.batch_transform) == reference_block
    assert build_batch_transform(cfg, DIGITS) is None
    cfg.augmentation.batch_transform.cutmix_alpha = 1.0
    transform = build_batch_transform(cfg, DIGITS)
    assert isinstance(transform, MixUpCutMix) and transform.enabled


def test_mixing_is_switched_on_from_the_command_line() -> None:
    cfg = compose_config(
        [
            "augmentation=dermoscopy",
            "augmentation.batch_transform.mixup_alpha=0.2",
            "augmentation.batch_transform.cutmix_alpha=1.0",
            "augmentation.batch_transform.label_smoothing=0.1",
        ]
    )
    transform = build_batch_transform(cfg, DIGITS)
    assert transform.mixup.mixup_alpha == 0.2 and transform.mixup.cutmix_alpha == 1.0
    assert transform.mixup.label_smoothing == 0.1 and transform.mixup.num_classes == 10


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "augmentation=moderate",
            "augmentation.batch_transform.mixup_alpha=0.2",
            "augmentation.batch_transform.cutmix_alpha=1.0",
        ],
        [
            "data=digits_multilabel",
            "loss=bce",
            "augmentation.batch_transform.mixup_alpha=0.2",
            "augmentation.batch_transform.label_smoothing=0.1",
        ],
        [
            "data=digits_binary",
            "data.batch_size=15",
            "augmentation.batch_transform.cutmix_alpha=1.0",
            "augmentation.batch_transform.mode=elem",
        ],
    ],
    ids=["multiclass", "multilabel", "binary-odd-batch"],
)
def test_mixing_trains_end_to_end(overrides: list[str], tmp_path: Path) -> None:
    assert run([*FAST, *overrides], tmp_path)["status"] == "ok"
