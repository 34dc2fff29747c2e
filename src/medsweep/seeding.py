"""Seeds derived from (run seed, epoch, stream): every random stream of an epoch is a pure function
of these, so a resumed run draws exactly what the uninterrupted run drew."""

from __future__ import annotations

import zlib

import numpy as np


def derived_seeds(seed: int, epoch: int, stream: str, n: int = 1) -> np.ndarray:
    """``n`` independent 32-bit seeds (uint32) for ``stream`` in ``epoch`` of a run seeded ``seed``."""
    key = [int(seed) % 2**64, int(epoch), zlib.crc32(stream.encode())]
    return np.random.SeedSequence(key).generate_state(n)


def derived_seed(seed: int, epoch: int, stream: str) -> int:
    """One 32-bit seed for ``stream`` in ``epoch`` of a run seeded ``seed``."""
    return int(derived_seeds(seed, epoch, stream, 1)[0])
