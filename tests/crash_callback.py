"""A Lightning callback that kills its own process mid-training (tests of crash handling)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback


class KillOnSeed(Callback):
    """Sends ``signum`` to this process at the first training batch when ``seed == kill_seed``."""

    def __init__(self, seed: int, kill_seed: int, signum: int = int(signal.SIGKILL)) -> None:
        self.kill = int(seed) == int(kill_seed)
        self.signum = int(signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Die here, while metrics.json says running."""
        if self.kill:
            os.kill(os.getpid(), self.signum)


class Pace(Callback):
    """Sleeps ``seconds`` before every training batch, so a test can act between epochs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Wait; the computation itself is unchanged."""
        import time

        time.sleep(self.seconds)
