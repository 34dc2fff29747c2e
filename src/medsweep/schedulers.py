"""Learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    SequentialLR,
)


def warmup_cosine(
    optimizer: Optimizer,
    max_epochs: int,
    warmup_epochs: int = 1,
    eta_min: float = 0.0,
    warmup_start_factor: float = 0.1,
    restart_epochs: int | None = None,
    restart_mult: int = 1,
) -> LRScheduler:
    """Linear warmup for ``warmup_epochs``, then cosine annealing to ``eta_min``.

    With ``restart_epochs`` the cosine part restarts every ``restart_epochs`` epochs (SGDR),
    each cycle ``restart_mult`` times longer than the last.
    """
    if restart_epochs:
        cosine: LRScheduler = CosineAnnealingWarmRestarts(
            optimizer, T_0=restart_epochs, T_mult=restart_mult, eta_min=eta_min
        )
    else:
        cosine = CosineAnnealingLR(
            optimizer, T_max=max(1, max_epochs - warmup_epochs), eta_min=eta_min
        )
    if warmup_epochs <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
