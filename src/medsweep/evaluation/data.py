"""A run's saved predictions as arrays: validation and test probabilities, targets, sample ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsweep.predictions import probability_matrix, read_predictions, target_array
from medsweep.results import PREDICTIONS_FILE, read_metrics

TASKS = ("binary", "multiclass", "multilabel")


@dataclass
class Part:
    """One part (val or test): (N, K) probabilities, targets ((N,) indices or (N, K) multi-hot)."""

    probs: np.ndarray
    targets: np.ndarray
    index: np.ndarray
    ids: list[str]
    fold: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, rows: np.ndarray) -> Part:
        """The rows ``rows`` of this part."""
        return Part(
            self.probs[rows],
            self.targets[rows],
            self.index[rows],
            [self.ids[i] for i in rows],
            None if self.fold is None else self.fold[rows],
        )

    def with_probs(self, probs: np.ndarray) -> Part:
        """The same samples with other probabilities."""
        return Part(
            np.asarray(probs, dtype=np.float64), self.targets, self.index, self.ids, self.fold
        )


@dataclass
class EvalData:
    """What an evaluation reads: task, classes and the val/test parts of one run or ensemble."""

    task: str
    classes: list[str]
    val: Part | None
    test: Part | None
    name: str = ""
    run_dirs: list[Path] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def positive(self) -> str | None:
        """The positive class of a binary task (the second class), else None."""
        return self.classes[1] if self.task == "binary" else None


def positive_scores(probs: np.ndarray, task: str) -> np.ndarray:
    """Scores to rank by: the positive column for binary, all columns otherwise."""
    return probs[:, 1] if task == "binary" else probs


def one_vs_rest(targets: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """(N, K) 0/1 matrix: class membership (multiclass/binary one-hot) or the multi-hot labels."""
    if task == "multilabel":
        return np.asarray(targets, dtype=np.int64)
    return np.eye(n_classes, dtype=np.int64)[np.asarray(targets, dtype=np.int64)]


def load_run(run_dir: str | Path) -> EvalData:
    """Read a run folder's metrics.json and predictions into an ``EvalData``."""
    run_dir = Path(run_dir)
    record = read_metrics(run_dir)
    if record.get("status") != "ok":
        raise ValueError(f"{run_dir}: status {record.get('status')!r}; only ok runs are evaluated")
    task, classes = record.get("task"), list(record.get("classes") or [])
    if task not in TASKS or not classes:
        raise ValueError(f"{run_dir}/metrics.json: task {task!r}, classes {classes!r}")
    name = (record.get("paths") or {}).get("predictions") or PREDICTIONS_FILE
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no predictions file ({name}); re-run training")
    frame = read_predictions(path)
    parts = {}
    for part in ("val", "test"):
        rows = frame[frame["part"] == part]
        if len(rows) == 0:
            parts[part] = None
            continue
        parts[part] = Part(
            probability_matrix(rows, classes),
            target_array(rows, task, classes),
            rows["index"].to_numpy(dtype=np.int64),
            rows["id"].astype(str).tolist(),
            rows["fold"].to_numpy(dtype=np.int64),
        )
    return EvalData(
        task,
        classes,
        parts["val"],
        parts["test"],
        name=record.get("config_key") or run_dir.name,
        run_dirs=[run_dir],
        record=record,
    )


def common_test_order(parts: Sequence[Part]) -> list[np.ndarray]:
    """Row orders that put each part's test samples in the order of the first (same samples)."""
    reference = parts[0].index
    position = {int(v): i for i, v in enumerate(reference)}
    orders = []
    for n, part in enumerate(parts):
        if len(part.index) != len(reference) or set(map(int, part.index)) != set(position):
            raise ValueError(
                f"member {n} was tested on other samples ({len(part.index)} vs "
                f"{len(reference)}); only runs that share one test set combine"
            )
        rank = np.argsort([position[int(v)] for v in part.index], kind="stable")
        orders.append(rank)
    return orders
