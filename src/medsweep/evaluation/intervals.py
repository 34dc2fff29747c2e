"""A point estimate with its confidence interval."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and how it was obtained."""

    estimate: float
    low: float
    high: float
    method: str
    n_valid: int = 0

    def to_dict(self) -> dict:
        """The interval as a plain dict."""
        return asdict(self)
