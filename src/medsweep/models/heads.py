"""Classification heads placed on pooled backbone features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

HEADS = ("linear", "mlp")


def build_head(
    kind: str,
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (512, 256),
    dropout: float = 0.3,
) -> nn.Module:
    """``linear``: one Dense layer; ``mlp``: (Dense + BN + ReLU + Dropout) per hidden width, then Dense."""
    if kind == "linear":
        return (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features))
            if dropout
            else nn.Linear(in_features, out_features)
        )
    if kind == "mlp":
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [
                nn.Linear(width, h),
                nn.BatchNorm1d(h),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            width = h
        layers.append(nn.Linear(width, out_features))
        return nn.Sequential(*layers)
    raise ValueError(f"model.head={kind!r} is not valid; choose one of {list(HEADS)}")
