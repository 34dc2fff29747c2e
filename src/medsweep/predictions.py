"""Per-sample predictions of a run: one row per val/test sample, one probability column per class.

Columns: ``part`` (val | test), ``index`` (the sample's position in the data source), ``id`` (its
file path, or the index for in-memory sets), ``fold``, the target (``target``: class index for
binary and multiclass; ``target/<label>``: 0/1 per label for multilabel) and ``prob/<class>``.
Binary runs hold both columns, ``prob/<negative>`` = 1 - ``prob/<positive>``, so every task's
rows read the same way. Parquet (pyarrow) when installed, CSV otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is made or read: after training, not before
    import pandas as pd

PROB_PREFIX = "prob/"
TARGET_PREFIX = "target/"


def parquet_available() -> bool:
    """Whether pandas can write Parquet here (pyarrow installed)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def prediction_frame(
    part: str,
    indices: Sequence[int],
    ids: Sequence[str],
    fold: int,
    targets: np.ndarray,
    probs: np.ndarray,
    task: str,
    classes: Sequence[str],
) -> pd.DataFrame:
    """One part's predictions as a table (``probs``: (N,) positive class for binary, else (N, K))."""
    import pandas as pd

    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    n = len(indices)
    if len(probs) != n or len(targets) != n or len(ids) != n:
        raise ValueError(
            f"{part}: {n} samples but {len(probs)} probability rows, {len(targets)} targets, "
            f"{len(ids)} ids"
        )
    frame = pd.DataFrame(
        {
            "part": part,
            "index": np.asarray(indices, dtype=np.int64),
            "id": [str(i) for i in ids],
            "fold": int(fold),
        }
    )
    if task == "multilabel":
        for j, label in enumerate(classes):
            frame[f"{TARGET_PREFIX}{label}"] = targets[:, j].astype(np.int64)
    else:
        frame["target"] = targets.reshape(-1).astype(np.int64)
    if task == "binary":
        positive = probs.reshape(-1)
        probs = np.stack([1.0 - positive, positive], axis=1)
    if probs.shape[1] != len(classes):
        raise ValueError(f"{part}: {probs.shape[1]} probability columns for {len(classes)} classes")
    for j, name in enumerate(classes):
        frame[f"{PROB_PREFIX}{name}"] = probs[:, j]
    return frame


def write_predictions(frames: Sequence[pd.DataFrame], path: str | Path) -> Path:
    """Write the parts' tables to ``path`` (.parquet; .csv beside it when pyarrow is missing)."""
    import pandas as pd

    path = Path(path)
    frame = pd.concat(list(frames), ignore_index=True)
    if path.suffix == ".parquet" and not parquet_available():
        path = path.with_suffix(".csv")
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False, float_format="%.9g")
    tmp.replace(path)
    return path


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Load a predictions file written by ``write_predictions``."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"id": str, "part": str})


def probability_matrix(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, K) probabilities of ``frame`` in class order."""
    return frame[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float64)


def target_array(frame: pd.DataFrame, task: str, classes: Sequence[str]) -> np.ndarray:
    """Class indices (N,), or the (N, K) multi-hot matrix for multilabel."""
    if task == "multilabel":
        return frame[[f"{TARGET_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.int64)
    return frame["target"].to_numpy(dtype=np.int64)
