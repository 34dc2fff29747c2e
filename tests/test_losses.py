"""Losses against torch's and MONAI's own definitions, for each task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss as MonaiFocalLoss

from medsweep.losses import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss


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
