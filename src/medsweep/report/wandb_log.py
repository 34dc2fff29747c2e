"""Log a report's summary and comparison tables to a W&B run (offline unless a key is set)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def wandb_mode() -> str:
    """Pick the W&B mode: offline unless WANDB_API_KEY is set; WANDB_MODE offline/disabled wins."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in {"offline", "disabled", "dryrun"}:
        return "offline" if env_mode == "dryrun" else env_mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Python scalars only (no pandas NA / nullable ints), which wandb.Table accepts."""
    frame = table.astype(object)
    return frame.where(frame.notna(), None)


def log_tables_to_wandb(
    tables: Mapping[str, pd.DataFrame],
    project: str,
    out_dir: str | Path,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    job_type: str = "report",
    group: str | None = None,
) -> Path | None:
    """Log each table as a ``wandb.Table`` in a new run (job_type "report") stored in ``out_dir``.

    Returns the local run folder, or None when W&B is disabled or could not start.
    """
    mode = wandb_mode()
    if mode == "disabled":
        log.info("WANDB_MODE=disabled: report tables not logged to W&B")
        return None
    import wandb  # slow import, only when logging

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project,
            job_type=job_type,
            group=group,
            name=name,
            mode=mode,
            dir=str(out_dir),
            config=dict(config or {}),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", save_code=False),
        )
    except Exception as err:  # W&B must never cost the user their report
        log.warning("W&B run could not start (%s: %s); tables not logged", type(err).__name__, err)
        return None
    try:
        run.log({key: wandb.Table(dataframe=_plain(table)) for key, table in tables.items()})
        for key, value in (summary or {}).items():
            run.summary[key] = value
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    log.info("W&B %s run written to %s", mode, run_dir)
    return run_dir
