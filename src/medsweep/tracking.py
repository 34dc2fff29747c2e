"""W&B runs that a dashboard can group: who a run is (group, job type, name, tags, config) and
what it ends with (best-checkpoint metrics, confusion matrix and curves in the run summary).

- ``group``: the configuration (``config_key``), so W&B averages a configuration's folds;
- ``job_type``: the sweep, named by its folder (``2026-01-02/12-30-00`` under outputs/multirun),
  ``train`` for a single run; ``medsweep report`` can log to the same job type
  (``report_run_settings``);
- ``name``: ``<config_key>/fold-<k>`` (``/seed-<s>`` when the seed is swept);
- ``tags``: the presets (``experiment``, ``sweep``) and ``logger.wandb.tags``;
- ``config``: the resolved config flattened (``loss._target_``, ``optimizer.lr``), plus
  ``overrides``, ``config_key``, ``config_hash`` and ``sweep``.

A value set in ``logger.wandb`` (``logger.wandb.group=mine``) wins over the automatic one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# W&B's limits on these fields (characters)
GROUP_MAX, NAME_MAX, JOB_TYPE_MAX, TAG_MAX = 128, 128, 64, 64
SINGLE_RUN_JOB_TYPE = "train"
PRESET_GROUPS = ("experiment", "sweep")


def fit(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else a readable prefix and a short hash."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9]}~{digest}"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"_target_": "x"}}`` -> ``{"loss._target_": "x"}`` (lists stay values)."""
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        if not node and prefix:
            flat[prefix[:-1]] = {}
        return flat
    return {prefix[:-1]: node}


def sweep_job_type(sweep_dir: str | Path) -> str:
    """A sweep's name from its folder: the part under ``multirun/`` if there is one, else the
    folder's name (``outputs/multirun/2026-01-02/12-30-00`` -> ``2026-01-02/12-30-00``)."""
    parts = Path(sweep_dir).absolute().parts
    if "multirun" in parts[:-1]:
        last = len(parts) - 1 - parts[::-1].index("multirun")
        label = "/".join(parts[last + 1 :])
    else:
        label = parts[-1]
    return fit(label, JOB_TYPE_MAX)


def _hydra_context() -> tuple[str, dict[str, str]]:
    """The job type and the config group choices of the running Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return SINGLE_RUN_JOB_TYPE, {}
    hydra_cfg = HydraConfig.get()
    choices = {k: str(v) for k, v in (hydra_cfg.runtime.choices or {}).items() if v is not None}
    if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
        return sweep_job_type(hydra_cfg.sweep.dir), choices
    return SINGLE_RUN_JOB_TYPE, choices


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's app resolves: keep it as written
        data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)
    data.pop("overrides", None)
    return data


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The W&B ``group``, ``job_type``, ``name``, ``tags`` and ``config`` of the run ``cfg`` defines."""
    from medsweep.pipeline import run_overrides
    from medsweep.results import config_hash, config_key

    overrides = run_overrides(cfg)
    key = config_key(overrides) or "default"
    job_type, choices = _hydra_context()
    fold = int(OmegaConf.select(cfg, "fold.index", default=0) or 0)
    replicate = f"/fold-{fold}" + (f"/seed-{cfg.seed}" if "seed" in overrides else "")
    presets = [choices[g] for g in PRESET_GROUPS if choices.get(g)]
    if not choices:  # outside Hydra (a notebook, compose_config): the presets among the overrides
        presets = [str(overrides[g]) for g in PRESET_GROUPS if overrides.get(g)]
    config = flatten(_resolved(cfg))
    config.update(
        {
            "config_key": key,
            "config_hash": config_hash(cfg),
            "overrides": [f"{k}={v}" for k, v in overrides.items()],
            "sweep": job_type,
        }
    )
    return {
        "group": fit(key, GROUP_MAX),
        "job_type": job_type,
        "name": fit(key, NAME_MAX - len(replicate)) + replicate,
        "tags": [fit(t, TAG_MAX) for t in presets],
        "config": config,
    }


def _is_wandb(node: Any) -> bool:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] == "WandbLogger"


def build_loggers(cfg: DictConfig) -> list:
    """The loggers of ``cfg.logger``; a W&B logger gets the run's group, job type, name, tags and
    config where ``logger.wandb`` leaves them unset."""
    from medsweep.pipeline import instantiate

    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        if not _is_wandb(node):
            loggers.append(instantiate(node))
            continue
        identity = run_identity(cfg)
        given = {k: node.get(k) for k in ("group", "job_type", "name", "tags", "config")}
        extra = {k: v for k, v in identity.items() if not given.get(k)}
        if given.get("tags"):
            extra["tags"] = [*identity["tags"], *[str(t) for t in given["tags"]]]
        if given.get("config"):
            extra["config"] = {
                **identity["config"],
                **flatten(OmegaConf.to_container(given["config"])),
            }
        # called with plain Python values: instantiate would turn them into OmegaConf nodes
        loggers.append(instantiate(node, _partial_=True)(**extra))
    return loggers


def wandb_run(trainer) -> Any | None:
    """The W&B run of the trainer's WandbLogger, if it has one and it started."""
    for logger in getattr(trainer, "loggers", []):
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None):
            return logger.experiment
    return None


def _binary_columns(probs: np.ndarray) -> np.ndarray:
    p = probs.reshape(-1)
    return np.stack([1 - p, p], axis=1)


def _media(part: str, out: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix, ROC and precision-recall curves of one part as W&B charts."""
    import wandb

    probs, targets = np.asarray(out["probs"]), np.asarray(out["targets"])
    if not len(probs) or targets.ndim != 1:  # multilabel: the summary holds its per-class counts
        return {}
    labels = [str(c) for c in classes]
    y_probas = _binary_columns(probs) if probs.ndim == 1 or probs.shape[1] == 1 else probs
    y_true = targets.astype(int).tolist()
    charts = {
        f"{part}/confusion_matrix": lambda: wandb.plot.confusion_matrix(
            y_true=y_true,
            preds=y_probas.argmax(1).tolist(),
            class_names=labels,
            title=f"{part} confusion (best checkpoint)",
        ),
        f"{part}/roc": lambda: wandb.plot.roc_curve(
            y_true, y_probas, labels=labels, title=f"{part} ROC"
        ),
        f"{part}/pr": lambda: wandb.plot.pr_curve(
            y_true, y_probas, labels=labels, title=f"{part} precision-recall"
        ),
    }
    media = {}
    for key, make in charts.items():
        try:
            chart = make()
        except Exception as err:  # a chart must never cost the run its result
            log.warning("W&B chart %s not logged (%s: %s)", key, type(err).__name__, err)
            continue
        if chart is not None:
            media[key] = chart
    return media


def log_summary(trainer, parts: Mapping[str, Mapping[str, Any]], classes: Sequence[str]) -> None:
    """Best-checkpoint val/test metrics and confusion matrices into the W&B run summary, and the
    confusion matrix, ROC and PR curves as W&B charts (no-op without a W&B logger)."""
    run = wandb_run(trainer)
    if run is None:
        return
    media: dict[str, Any] = {}
    for part, out in parts.items():
        for name, value in out["metrics"].items():
            run.summary[f"{part}/{name}"] = value
        run.summary[f"{part}/confusion"] = out["confusion"]
        media.update(_media(part, out, classes))
    best = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    if best and best[0].best_model_score is not None:
        run.summary[f"best/{best[0].monitor}"] = float(best[0].best_model_score)
    if media:
        run.log(media)


def run_entry(trainer) -> dict | None:
    """What metrics.json keeps of the W&B run: project, folder, id, mode, group, job type, name."""
    run = wandb_run(trainer)
    if run is None:
        return None
    return {
        "project": run.project,
        "dir": str(Path(run.dir).parent),
        "id": run.id,
        "mode": "offline" if run.settings._offline else "online",
        "group": run.group,
        "job_type": run.job_type,
        "name": run.name,
        "url": run.url if not run.settings._offline else None,
    }


def report_run_settings(records: Sequence[Mapping[str, Any]], root: str | Path) -> dict[str, Any]:
    """``wandb.init`` arguments for the report of a sweep: the sweep runs' project and job type
    (so the report sits beside its runs), group ``report``, name ``report``."""
    entries = [r["wandb"] for r in records if isinstance(r.get("wandb"), Mapping)]
    projects = [e.get("project") for e in entries if e.get("project")]
    job_types = [e.get("job_type") for e in entries if e.get("job_type")]
    return {
        "project": max(set(projects), key=projects.count) if projects else None,
        "job_type": max(set(job_types), key=job_types.count) if job_types else sweep_job_type(root),
        "group": "report",
        "name": "report",
    }
