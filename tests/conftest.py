"""Fixtures shared by the suite; helpers live in tests/helpers.py (on the path for every test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_csv, write_image_folder, write_npz


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    """A MedMNIST-format file with predefined train/val/test parts."""
    return write_npz(tmp_path / "tiny.npz")


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """An image folder with one sub-folder per class."""
    return write_image_folder(tmp_path / "folder")


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """A manifest CSV with image, label and patient columns."""
    return write_csv(tmp_path / "csvdata")
