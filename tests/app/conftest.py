"""The app's tests share one tiny evaluated study (two k-fold runs of a binary image folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from predict_runs import train_study


@pytest.fixture(scope="session")
def app_study(tmp_path_factory) -> dict[str, Path]:
    """Image folder, multirun folder and its two evaluated fold runs."""
    return train_study(tmp_path_factory.mktemp("app"))
