"""Losses against torch's and MONAI's own definitions, for each task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import FAST, compose, run
from monai.losses import FocalLoss as MonaiFocalLoss
from timm.loss import AsymmetricLossMultiLabel

from medsweep.losses import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss, loss_arguments
from medsweep.pipeline import build_datamodule, build_model, build_module


def test_ce_binary_equals_two_class_softmax():
    torch.manual_seed(0)
    logit = torch.randn(16, 1)
    target = torch.randint(0, 2, (16, 1)).float()
    two_class = torch.cat([torch.zeros_like(logit), logit], dim=1)  # softmax([0, z]) = sigmoid(z)
    expected = F.cross_entropy(two_class, target.view(-1).long())
    assert CrossEntropyLoss("binary")(logit, target) == pytest.approx(expected.item(), abs=1e-6)


def test_ce_multiclass_with_weights_and_smoothing():
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    w = torch.tensor([1.0, 2.0, 0.5])
    ours = CrossEntropyLoss("multiclass", label_smoothing=0.1, weight=w)(
        logits, F.one_hot(y, 3).float()
    )
    expected = F.cross_entropy(logits, y, weight=w, label_smoothing=0.1)
    assert ours.item() == pytest.approx(expected.item(), abs=1e-6)


def test_binary_class_weights_apply_per_sample():
    logit = torch.tensor([[0.3], [-1.0], [2.0]])
    target = torch.tensor([[1.0], [0.0], [0.0]])
    weights = torch.tensor([0.5, 3.0])  # [negative, positive]
    per_sample = F.binary_cross_entropy_with_logits(logit, target, reduction="none").view(-1)
    expected = (per_sample * torch.tensor([3.0, 0.5, 0.5])).mean()
    assert BCEWithLogitsLoss("binary", weight=weights)(logit, target).item() == pytest.approx(
        expected.item()
    )
    assert CrossEntropyLoss("binary", weight=weights)(logit, target).item() == pytest.approx(
        expected.item()
    )
    focal = MonaiFocalLoss(gamma=2.0, reduction="none")(logit, target).view(-1)
    expected_focal = (focal * torch.tensor([3.0, 0.5, 0.5])).mean()
    assert FocalLoss("binary", weight=weights)(logit, target).item() == pytest.approx(
        expected_focal.item()
    )


def test_bce_pos_weight_matches_torch():
    logits = torch.randn(6, 3)
    target = torch.randint(0, 2, (6, 3)).float()
    pw = torch.tensor([1.0, 4.0, 0.2])
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
    assert BCEWithLogitsLoss("multilabel", pos_weight=pw)(logits, target).item() == pytest.approx(
        expected.item()
    )


def test_focal_multiclass_is_monai_softmax_focal():
    logits = torch.randn(5, 4)
    target = F.one_hot(torch.tensor([0, 1, 2, 3, 1]), 4).float()
    expected = MonaiFocalLoss(gamma=1.5, use_softmax=True)(logits, target)
    assert FocalLoss("multiclass", gamma=1.5)(logits, target).item() == pytest.approx(
        expected.item()
    )


def test_focal_gamma_zero_reduces_to_bce():
    logits = torch.randn(6, 1)
    target = torch.randint(0, 2, (6, 1)).float()
    assert FocalLoss("binary", gamma=0.0)(logits, target).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, target).item(), abs=1e-6
    )


# -- focal loss: what gamma and alpha do, computed by hand ----------------------------------------


def _softmax_focal_by_hand(logits, labels, gamma, class_alpha):
    """mean over B x K of -alpha_y (1 - p_y)^gamma log p_y (zero for the other classes)."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        p = torch.tensor(row).softmax(0)[y].item()
        total += -class_alpha[y] * (1 - p) ** gamma * math.log(p)
    return total / logits.numel()


def test_focal_softmax_scalar_alpha_weights_class_zero_by_one_minus_alpha():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.5, 0.0], [0.3, -0.2, 2.0]])
    labels = torch.tensor([0, 1, 2, 0])
    target = F.one_hot(labels, 3).float()
    ours = FocalLoss("multiclass", gamma=2.0, alpha=0.25)(logits, target).item()
    assert ours == pytest.approx(_softmax_focal_by_hand(logits, labels, 2.0, [0.75, 0.25, 0.25]))
    # neither gamma nor alpha is ignored
    assert ours != pytest.approx(_softmax_focal_by_hand(logits, labels, 0.0, [0.75, 0.25, 0.25]))
    assert ours != pytest.approx(_softmax_focal_by_hand(logits, labels, 2.0, [1.0, 1.0, 1.0]))


def test_focal_softmax_alpha_per_class():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.5, 0.0], [0.3, -0.2, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    alpha = [0.25, 0.5, 0.25]
    ours = FocalLoss("multiclass", gamma=1.5, alpha=alpha)(logits, F.one_hot(labels, 3).float())
    assert ours.item() == pytest.approx(_softmax_focal_by_hand(logits, labels, 1.5, alpha))


def test_focal_sigmoid_scalar_and_per_output_alpha():
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-0.7, 2.2]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = logits.sigmoid()
    p_t = torch.where(target == 1, p, 1 - p)
    modulated = -((1 - p_t) ** 2.0) * p_t.log()
    scalar = torch.where(target == 1, 0.25, 0.75)  # positive term alpha, negative 1 - alpha
    ours = FocalLoss("multilabel", gamma=2.0, alpha=0.25)(logits, target)
    assert ours.item() == pytest.approx((scalar * modulated).mean().item())
    per_output = torch.where(target == 1, torch.tensor([0.2, 0.9]), 1.0)  # negatives keep 1
    ours = FocalLoss("multilabel", gamma=2.0, alpha=[0.2, 0.9])(logits, target)
    assert ours.item() == pytest.approx((per_output * modulated).mean().item())


def test_focal_alpha_values_are_checked():
    with pytest.raises(ValueError, match=r"loss.alpha=1.5 must lie in \[0, 1\]"):
        FocalLoss("multiclass", alpha=1.5)
    with pytest.raises(ValueError, match="loss.alpha=.*binary task.*one number"):
        FocalLoss("binary", alpha=[0.3, 0.7])


# -- label smoothing reaches the sigmoid tasks ----------------------------------------------------


def test_label_smoothing_on_binary_ce_is_two_class_softmax_smoothing():
    logit = torch.tensor([[0.8], [-1.2], [2.5], [0.0]])
    y = torch.tensor([1, 0, 1, 0])
    two_class = torch.cat([torch.zeros_like(logit), logit], dim=1)
    expected = F.cross_entropy(two_class, y, label_smoothing=0.2)
    ours = CrossEntropyLoss("binary", label_smoothing=0.2)(logit, y.float().view(-1, 1))
    assert ours.item() == pytest.approx(expected.item(), abs=1e-6)
    assert ours.item() != pytest.approx(CrossEntropyLoss("binary")(logit, y.float().view(-1, 1)))


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_label_smoothing_on_bce_and_focal_moves_targets_toward_half(task):
    torch.manual_seed(0)
    shape = (6, 1) if task == "binary" else (6, 3)
    logits = torch.randn(shape)
    target = torch.randint(0, 2, shape).float()
    smoothed = target * 0.9 + 0.05  # 0 -> 0.05, 1 -> 0.95
    expected = F.binary_cross_entropy_with_logits(logits, smoothed)
    bce = BCEWithLogitsLoss(task, label_smoothing=0.1)(logits, target)
    assert bce.item() == pytest.approx(expected.item(), abs=1e-6)
    focal = FocalLoss(task, gamma=0.0, label_smoothing=0.1)(logits, target)  # gamma 0: BCE
    assert focal.item() == pytest.approx(expected.item(), abs=1e-6)
    if task == "multilabel":  # per-output alpha still weights the (unsmoothed) positives
        alpha = torch.tensor([0.2, 0.5, 0.9])
        per_element = F.binary_cross_entropy_with_logits(logits, smoothed, reduction="none")
        weighted = (torch.where(target == 1, alpha, 1.0) * per_element).mean()
        ours = FocalLoss(task, gamma=0.0, alpha=alpha.tolist(), label_smoothing=0.1)
        assert ours(logits, target).item() == pytest.approx(weighted.item(), abs=1e-6)


# -- the pipeline's arguments go only to losses that take them ------------------------------------


def test_loss_arguments_follow_the_signature():
    weight = torch.tensor([1.0, 2.0, 0.5])
    assert loss_arguments(MonaiFocalLoss, "multiclass", {"weight": weight}) == {"weight": weight}
    assert set(loss_arguments(FocalLoss, "multiclass", {"weight": weight})) == {"task", "weight"}
    assert loss_arguments(AsymmetricLossMultiLabel, "multilabel", {"pos_weight": weight}) == {
        "pos_weight": weight
    }
    with pytest.raises(ValueError, match="balance.pos_weight does not fit loss=.*CrossEntropyLoss"):
        loss_arguments(CrossEntropyLoss, "binary", {"pos_weight": weight})
    with pytest.raises(ValueError, match="balance.class_weights on a binary task"):
        loss_arguments(AsymmetricLossMultiLabel, "binary", {"weight": weight[:2]})


# -- library losses by a bare _target_, through the real pipeline ---------------------------------


def _module(overrides, tmp_path):
    cfg = compose([*FAST, *overrides], tmp_path)
    dm = build_datamodule(cfg)
    return dm, build_module(cfg, dm, build_model(cfg, dm))


def test_timm_asymmetric_loss_trains_with_pos_weight(tmp_path):
    overrides = ["data=digits_multilabel", "loss=asymmetric", "balance=pos_weight"]
    dm, module = _module(overrides, tmp_path)
    assert isinstance(module.loss_fn, AsymmetricLossMultiLabel)
    assert (module.loss_fn.gamma_neg, module.loss_fn.clip) == (4.0, 0.05)
    labels = dm.datasets["train"].labels()
    expected = (len(labels) - labels.sum(0)) / labels.sum(0)  # negatives / positives per label
    assert torch.allclose(module.loss_fn.pos_weight, torch.tensor(expected, dtype=torch.float32))
    record = run([*FAST, *overrides], tmp_path / "run")
    assert record["status"] == "ok" and math.isfinite(record["val"]["loss"])


def test_monai_focal_loss_by_bare_target(tmp_path):
    overrides = [
        "loss=focal",
        "loss._target_=monai.losses.FocalLoss",
        "~loss.label_smoothing",
        "+loss.use_softmax=true",
        "balance=class_weights",
    ]
    dm, module = _module(overrides, tmp_path)
    assert isinstance(module.loss_fn, MonaiFocalLoss) and module.loss_fn.use_softmax
    assert module.loss_fn.class_weight.shape == (10,)  # the balance option's weights reach it
    assert run([*FAST, *overrides], tmp_path / "run")["status"] == "ok"


def test_loss_that_does_not_fit_the_task_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"loss=medsweep.losses.FocalLoss does not take.*alpha"):
        run([*FAST, "loss=focal", "loss.alpha=[0.2,0.3,0.5]"], tmp_path)  # 10 classes
    assert not (tmp_path / "history.csv").exists()
