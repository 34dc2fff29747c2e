"""Log an evaluation's figures and tables to the W&B run that trained the model (offline-capable)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def log_evaluation(ev) -> str | None:
    """Resume the run named in metrics.json's ``wandb`` entry and log tables and figures to it.

    Returns the W&B run id, or None when the run did not log to W&B or W&B could not start.
    """
    entry = (ev.data.record or {}).get("wandb") if ev.kind == "run" else None
    if not entry or not entry.get("id"):
        return None
    from medsweep.report.wandb_log import wandb_mode

    mode = wandb_mode() if entry.get("mode") != "offline" else "offline"
    if mode == "disabled":
        return None
    from pathlib import Path

    import wandb

    # entry["dir"] is <root>/wandb/<offline-run-...>: the resumed run's files go beside it under
    # the same root (where `wandb sync <root>/wandb/offline-run-*` finds both), never inside it
    root = str(Path(entry["dir"]).parent.parent) if entry.get("dir") else None
    try:
        run = wandb.init(
            project=entry.get("project"),
            id=entry["id"],
            resume="allow",
            dir=root,
            group=entry.get("group"),
            job_type=entry.get("job_type"),
            name=entry.get("name"),
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", save_code=False),
        )
    except Exception as err:  # W&B must never cost the user their evaluation
        log.warning(
            "W&B run could not resume (%s: %s); evaluation not logged", type(err).__name__, err
        )
        return None
    try:
        payload = {"eval/metrics_ci": wandb.Table(dataframe=ev.metrics.astype(object))}
        if ev.threshold_table is not None:
            payload["eval/thresholds"] = wandb.Table(dataframe=ev.threshold_table.astype(object))
        if ev.calibration is not None:
            payload["eval/calibration"] = wandb.Table(dataframe=ev.calibration.astype(object))
        for key, path in ev.files.items():
            if key.startswith("fig_"):
                payload[f"eval/{key[4:].replace(':', '_')}"] = wandb.Image(str(path))
        for _, row in ev.metrics.iterrows():
            run.summary[f"eval/test/{row['metric']}"] = row["estimate"]
        run.log(payload)
        return run.id
    finally:
        run.finish()
