"""The error raised when a report cannot be built from the given folder or options."""

from __future__ import annotations


class ReportError(ValueError):
    """A report input (folder, metric, baseline, output path) is invalid; the message says which."""
