"""Find the runs under a folder and load their metrics.json files into one table."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medsweep.report.configs import is_fold_index_key
from medsweep.report.errors import ReportError

# The schema's own rule: a configuration is its overrides minus replicate keys (fold, seed).
from medsweep.results import METRICS_FILE, SCHEMA_VERSION, parse_overrides, read_metrics
from medsweep.results import config_key as config_key_from_overrides

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"
SPLITS = ("val", "test")
# Folders never searched for runs: earlier reports, W&B files, hidden folders (.hydra, .git).
SKIPPED_DIRS = {"report", "wandb", "__pycache__", "node_modules"}
# Order in which headline metrics appear in tables; others follow alphabetically, loss last.
METRIC_ORDER = (
    "acc",
    "balanced_acc",
    "precision",
    "recall",
    "specificity",
    "f1",
    "f1_macro",
    "f1_micro",
    "auroc",
    "auprc",
    "ap",
    "mcc",
    "kappa",
)
LOWER_IS_BETTER = {"loss", "ece", "brier", "nll", "mae", "mse", "rmse", "error", "hamming"}

RUN_COLUMNS = [
    "run",
    "config_key",
    "fold",
    "n_folds",
    "seed",
    "job",
    "status",
    "error",
    "task",
    "dataset",
    "classes",
    "config_hash",
    "best_epoch",
    "epochs_run",
    "monitor",
    "monitor_mode",
    "n_train",
    "n_val",
    "n_test",
    "fit_s",
    "s_per_epoch",
    "train_img_per_s",
    "overrides",
    "run_dir",
    "history",
    "wandb_project",
    "wandb_mode",
]
_INT_COLUMNS = (
    "fold",
    "n_folds",
    "seed",
    "job",
    "best_epoch",
    "epochs_run",
    "n_train",
    "n_val",
    "n_test",
)


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts run folder 10 after 9."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", path.as_posix())
        if part
    ]


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def find_run_dirs(root: str | Path, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """Return the run folders under ``root``: those holding metrics.json, plus unfinished
    Hydra runs (a ``.hydra`` folder but no metrics.json) that sit beside finished ones.
    """
    root = Path(root)
    excluded = [Path(p) for p in exclude]
    finished: list[Path] = []
    unfinished: list[Path] = []
    for current, dirnames, filenames in os.walk(root):
        here = Path(current)
        dirnames[:] = [
            d
            for d in dirnames
            if d not in SKIPPED_DIRS
            and not d.startswith(".")
            and not any(_is_within(here / d, ex) for ex in excluded)
        ]
        if METRICS_FILE in filenames:
            finished.append(here)
        elif (here / ".hydra" / "overrides.yaml").is_file():
            unfinished.append(here)
    parents = {d.parent for d in finished}
    runs = finished + [d for d in unfinished if d.parent in parents and d != root]
    return sorted(runs, key=lambda d: _natural_key(d.relative_to(root)))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _resolve_path(run_dir: Path, value: Any, default: str) -> Path | None:
    """Locate a file a run refers to: relative to the run folder, else absolute, else default."""
    candidates = []
    if isinstance(value, str) and value:
        candidates.append(run_dir / value if not Path(value).is_absolute() else Path(value))
        candidates.append(run_dir / Path(value).name)
    candidates.append(run_dir / default)
    return next((c for c in candidates if c.is_file()), None)


def _hydra_overrides(run_dir: Path) -> dict[str, object]:
    """Read ``.hydra/overrides.yaml`` of a run folder; empty when absent or unreadable."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    try:
        lines = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: cannot read overrides (%s)", path, err)
        return {}
    return parse_overrides(lines) if isinstance(lines, list) else {}


def _fold_from_overrides(overrides: Mapping[str, Any]) -> int | None:
    return next((_int_or_none(v) for k, v in overrides.items() if is_fold_index_key(k)), None)


def _failed_row(run_dir: Path, root: Path, error: str) -> dict[str, Any]:
    overrides = _hydra_overrides(run_dir)
    return {
        "run": run_dir.relative_to(root).as_posix(),
        "config_key": config_key_from_overrides(overrides),
        "fold": _fold_from_overrides(overrides),
        "seed": _int_or_none(overrides.get("seed")),
        "status": "failed",
        "error": error,
        "overrides": json.dumps(overrides, sort_keys=True),
        "run_dir": str(run_dir.resolve()),
    }


def load_run(run_dir: str | Path, root: str | Path) -> dict[str, Any]:
    """Load one run folder into a flat row (see ``RUN_COLUMNS`` plus ``val/*``, ``test/*``)."""
    run_dir, root = Path(run_dir), Path(root)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return _failed_row(run_dir, root, f"no {METRICS_FILE}: the run did not finish (killed?)")
    try:
        data = read_metrics(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable, listed as a failed run (%s)", path, err)
        return _failed_row(run_dir, root, f"unreadable {METRICS_FILE}: {type(err).__name__}: {err}")
    except ValueError:
        return _failed_row(run_dir, root, f"{METRICS_FILE} does not hold a JSON object")
    schema = data.get("schema", SCHEMA_VERSION)
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        log.warning(
            "%s: schema %s is newer than %s; reading what is known", path, schema, SCHEMA_VERSION
        )

    overrides = data.get("overrides") if isinstance(data.get("overrides"), dict) else None
    if overrides is None:
        overrides = _hydra_overrides(run_dir)
    config_key = data.get("config_key")
    if not isinstance(config_key, str):
        config_key = config_key_from_overrides(overrides)

    status = str(data.get("status") or "").strip().lower()
    error = data.get("error")
    if not status:
        status = "ok" if isinstance(data.get("val"), dict) and data["val"] else "failed"
        if status == "failed" and not error:
            error = f"{METRICS_FILE} has no status and no validation metrics"
    if status != "ok" and not error:
        error = f"status {status!r} without an error message"

    sizes = data.get("sizes") if isinstance(data.get("sizes"), dict) else {}
    timing = data.get("timing") if isinstance(data.get("timing"), dict) else {}
    paths = data.get("paths") if isinstance(data.get("paths"), dict) else {}
    wandb = data.get("wandb") if isinstance(data.get("wandb"), dict) else None
    fold = _int_or_none(data.get("fold"))
    if fold is None:
        fold = _fold_from_overrides(overrides)
    history = _resolve_path(run_dir, paths.get("history"), HISTORY_FILE)

    row: dict[str, Any] = {
        "run": run_dir.relative_to(root).as_posix(),
        "config_key": config_key,
        "fold": fold,
        "n_folds": _int_or_none(data.get("n_folds")),
        "seed": _int_or_none(data.get("seed")),
        "job": _int_or_none(data.get("job")),
        "status": status,
        "error": None if error is None else str(error),
        "task": data.get("task"),
        "dataset": (data.get("data") or {}).get("name")
        if isinstance(data.get("data"), dict)
        else None,
        "classes": json.dumps(data["classes"]) if isinstance(data.get("classes"), list) else None,
        "config_hash": data.get("config_hash"),
        "best_epoch": _int_or_none(data.get("best_epoch")),
        "epochs_run": _int_or_none(data.get("epochs_run")),
        "monitor": data.get("monitor"),
        "monitor_mode": data.get("monitor_mode"),
        "n_train": _int_or_none(sizes.get("train")),
        "n_val": _int_or_none(sizes.get("val")),
        "n_test": _int_or_none(sizes.get("test")),
        "fit_s": _number(timing.get("fit_s")),
        "s_per_epoch": _number(timing.get("s_per_epoch")),
        "train_img_per_s": _number(timing.get("train_img_per_s")),
        "overrides": json.dumps(overrides, sort_keys=True, default=str),
        "run_dir": str(run_dir.resolve()),
        "history": str(history) if history else None,
        "wandb_project": wandb.get("project") if wandb else None,
        "wandb_mode": wandb.get("mode") if wandb else None,
    }
    for split in SPLITS:
        values = data.get(split)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            number = _number(value)
            if number is not None:
                row[f"{split}/{name}"] = number
    return row


def _metric_sort_key(name: str) -> tuple[int, int, str]:
    base, _, per_class = name.partition("/")
    if base == "loss":
        rank = len(METRIC_ORDER) + 1
    elif base in METRIC_ORDER:
        rank = METRIC_ORDER.index(base)
    else:
        rank = len(METRIC_ORDER)
    return (1 if per_class else 0, rank, name)


def order_metric_names(names: Iterable[str]) -> list[str]:
    """Order metric names (without split prefix): headline metrics first, per-class ones last."""
    return sorted(set(names), key=_metric_sort_key)


def metric_columns(runs: pd.DataFrame, headline_only: bool = False) -> list[str]:
    """Return the ``val/*`` then ``test/*`` metric columns that hold at least one value."""
    columns: list[str] = []
    for split in SPLITS:
        prefix = f"{split}/"
        names = [
            c[len(prefix) :] for c in runs.columns if c.startswith(prefix) and runs[c].notna().any()
        ]
        if headline_only:
            names = [n for n in names if "/" not in n]
        columns += [prefix + n for n in order_metric_names(names)]
    return columns


def higher_is_better(metric: str, runs: pd.DataFrame | None = None) -> bool:
    """Say whether larger values of ``metric`` are better (from the runs' monitor mode if known)."""
    if runs is not None and "monitor" in runs and "monitor_mode" in runs:
        modes = runs.loc[runs["monitor"] == metric, "monitor_mode"].dropna().unique()
        if len(modes) == 1 and modes[0] in {"min", "max"}:
            return modes[0] == "max"
    name = metric.split("/", 1)[-1].split("/")[0].lower()
    return not (name in LOWER_IS_BETTER or name.endswith("loss") or name.endswith("error"))


def collect_runs(root: str | Path, exclude: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Load every run under ``root`` into a DataFrame with one row per run."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"folder not found: {root}")
    if not root.is_dir():
        raise ReportError(f"not a folder: {root}")
    run_dirs = find_run_dirs(root, exclude=exclude)
    if not any((d / METRICS_FILE).is_file() for d in run_dirs):
        raise ReportError(
            f"no {METRICS_FILE} found under {root} (searched recursively, skipping report/ folders)"
        )
    rows = [load_run(d, root) for d in run_dirs]
    # a sweep's job order (folders are named by configuration); runs without a number keep theirs
    rows = sorted(rows, key=lambda r: (r.get("job") is None, r.get("job") or 0))
    runs = pd.DataFrame(rows)
    for column in RUN_COLUMNS:
        if column not in runs:
            runs[column] = None
    for column in _INT_COLUMNS:
        runs[column] = pd.array(
            [None if v is None or pd.isna(v) else int(v) for v in runs[column]], dtype="Int64"
        )
    runs["config_key"] = runs["config_key"].fillna("").astype(str)
    metrics = [c for c in runs.columns if c.split("/", 1)[0] in SPLITS and "/" in c]
    ordered = RUN_COLUMNS + [c for c in metric_columns(runs) if c in metrics]
    ordered += [c for c in metrics if c not in ordered]
    runs = runs[ordered]
    for column in metrics:
        runs[column] = pd.to_numeric(runs[column], errors="coerce")
    log.info("loaded %d runs (%d ok) from %s", len(runs), int((runs.status == "ok").sum()), root)
    return runs.reset_index(drop=True)


def config_order(runs: pd.DataFrame) -> list[str]:
    """Return configuration keys in order of first appearance (the sweep's job order)."""
    return list(dict.fromkeys(runs["config_key"].tolist()))


def check_comparable(runs: pd.DataFrame) -> None:
    """Refuse runs of different tasks, datasets or class lists in one table (they do not compare)."""
    ok = runs[runs["status"] == "ok"]
    kinds = {}
    for column, what in (("task", "tasks"), ("dataset", "datasets"), ("classes", "class lists")):
        values = sorted({str(v) for v in ok[column].dropna()}) if column in ok else []
        if len(values) > 1:
            where = {
                v: ", ".join(ok.loc[ok[column].astype(str) == v, "run"].head(3)) for v in values
            }
            kinds[what] = "; ".join(f"{v} ({where[v]})" for v in values)
    if kinds:
        detail = " | ".join(f"{what}: {listing}" for what, listing in kinds.items())
        raise ReportError(
            f"these runs do not compare in one table: {detail}. Report each group's folder "
            "separately, or pass --allow-mixed to rank them together anyway"
        )
