"""The one result schema: ``metrics.json`` per run, written atomically."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from pathlib import Path

SCHEMA_VERSION = 1
# overrides that select a replicate of a configuration rather than define it
REPLICATE_KEYS = ("fold.index", "seed", "resume", "skip_done")
IGNORED_PREFIXES = ("hydra.", "paths.")


def parse_overrides(overrides: list[str]) -> dict[str, object]:
    """``["loss=focal", "+x=1"]`` -> ``{"loss": "focal", "x": 1}`` (numbers parsed, order kept)."""
    parsed: dict[str, object] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith(IGNORED_PREFIXES):
            continue
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed


def config_key(overrides: dict[str, object]) -> str:
    """The configuration a run belongs to: its overrides minus fold and seed, sorted, joined."""
    kept = {k: v for k, v in overrides.items() if k not in REPLICATE_KEYS}
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(kept.items()))


def _fmt(value: object) -> str:
    return (
        json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)
    )


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False))
    tmp.replace(path)


def git_revision(root: Path | None = None) -> str | None:
    """The short commit of the working tree, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    """Versions of the libraries that decide a result."""
    import lightning
    import timm
    import torch

    from medsweep import __version__

    return {
        "medsweep": __version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def base_record(overrides: dict[str, object], seed: int, fold: int, n_folds: int) -> dict:
    """The fields every metrics.json has, failed runs included."""
    return {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "error": None,
        "overrides": overrides,
        "config_key": config_key(overrides),
        "fold": fold,
        "n_folds": n_folds,
        "seed": seed,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
    }


def read_metrics(path: Path) -> dict:
    """Load one metrics.json."""
    return json.loads(Path(path).read_text())


def print_summary(record: dict) -> None:
    """Print a run's validation and test metrics as a table in the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{record.get('config_key') or 'default'} · fold {record.get('fold')} · "
        f"best epoch {record.get('best_epoch')}"
    )
    table.add_column("metric")
    parts = [p for p in ("val", "test") if record.get(p)]
    for part in parts:
        table.add_column(part, justify="right")
    names = [k for k in record.get("val", {}) if "/" not in k]
    for name in names:
        table.add_row(name, *(f"{record[p].get(name, float('nan')):.4f}" for p in parts))
    console = Console()
    console.print(table)
    console.print(f"metrics.json in {record['paths']['run_dir']}")
