"""The one wiring place: builds data, model, module, trainer from a composed config and runs them."""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from medsweep.callbacks import History, Timing
from medsweep.data.datamodule import ImageDataModule
from medsweep.module import ClassificationModule
from medsweep.results import (
    base_record,
    git_revision,
    parse_overrides,
    read_metrics,
    versions,
    write_json_atomic,
)

log = logging.getLogger(__name__)


def instantiate(node, *args, **kwargs):
    """``hydra.utils.instantiate`` that re-raises the builder's own error (naming the file or key)."""
    try:
        return hydra_instantiate(node, *args, **kwargs)
    except InstantiationException as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise


def run_overrides(cfg: DictConfig) -> dict[str, object]:
    """The overrides that define this run: Hydra's task overrides, or ``cfg.overrides`` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return parse_overrides(list(HydraConfig.get().overrides.task))
    return parse_overrides(list(cfg.get("overrides") or []))


def build_datamodule(cfg: DictConfig, run_dir: Path | None = None) -> ImageDataModule:
    """Source, fold splitter, transforms and balancing from ``cfg.data``, ``cfg.fold``, ..."""
    data = cfg.data
    source = instantiate(data.source).with_task(cfg.get("task"))
    balance = instantiate(cfg.balance)
    aug = cfg.augmentation
    dm = ImageDataModule(
        source=source,
        splitter=instantiate(cfg.fold),
        image_size=data.image_size,
        channels=data.channels,
        normalization=data.normalization,
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        train_albumentations=[instantiate(op) for op in aug.get("albumentations") or []],
        train_monai=[instantiate(op) for op in aug.get("monai") or []],
        seed=cfg.seed,
        splits_path=run_dir / "splits.json" if run_dir else None,
        pin_memory=data.get("pin_memory", False),
        train_sampler=balance.sampler,
        train_index_hook=balance.train_indices,
    )
    dm.setup()
    dm.balance = balance
    return dm


def build_model(cfg: DictConfig, dm: ImageDataModule):
    """The network (or a scikit-learn baseline) sized for the data's classes and channels."""
    return instantiate(cfg.model, num_classes=dm.output_units, in_chans=dm.channels)


def build_batch_transform(cfg: DictConfig, dm: ImageDataModule):
    """A batch-level transform (MixUp/CutMix) when the augmentation option enables one."""
    batch_cfg = cfg.augmentation.get("batch_transform")
    transform = (
        instantiate(batch_cfg, task=dm.task, num_classes=len(dm.classes)) if batch_cfg else None
    )
    return transform if getattr(transform, "enabled", True) else None


def build_module(
    cfg: DictConfig, dm: ImageDataModule, model: torch.nn.Module
) -> ClassificationModule:
    """Loss (with class balancing from the training fold), optimizer and scheduler around ``model``."""
    train_labels = dm.datasets["train"].labels() if dm.datasets else dm.source.labels
    balance_kwargs = dm.balance.loss_kwargs(train_labels, dm.task, len(dm.classes))
    accepted = inspect.signature(get_class(cfg.loss._target_)).parameters
    for key in balance_kwargs:
        if key not in accepted:
            raise ValueError(
                f"balance.{key} does not fit loss={cfg.loss._target_}: it takes "
                f"{sorted(set(accepted) - {'task'})}; use loss=bce for pos_weight"
            )
    loss = instantiate(cfg.loss, task=dm.task, **balance_kwargs)
    sched = cfg.scheduler
    return ClassificationModule(
        model=model,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        task=dm.task,
        classes=dm.classes,
        scheduler=instantiate(sched.scheduler) if sched.get("scheduler") else None,
        scheduler_interval=sched.get("interval", "epoch"),
        scheduler_monitor=sched.get("monitor"),
        backbone_lr_scale=cfg.finetune.get("backbone_lr_scale", 1.0),
        batch_transform=build_batch_transform(cfg, dm),
    )


def _instantiate_dict(group: DictConfig | None) -> list:
    return [instantiate(v) for v in (group or {}).values() if v is not None and "_target_" in v]


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: list) -> L.Trainer:
    """Trainer from ``cfg.trainer`` with the callbacks and loggers of their groups."""
    callbacks = _instantiate_dict(cfg.get("callbacks")) + extra_callbacks
    if cfg.finetune.get("policy"):
        callbacks.append(instantiate(cfg.finetune.policy))
    loggers = _instantiate_dict(cfg.get("logger"))
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    path = monitored[0].best_model_path if monitored else ""
    return path or None


def _evaluate(
    trainer: L.Trainer, module: ClassificationModule, dm: ImageDataModule, ckpt: str | None
) -> dict:
    """Validation and test metrics at ``ckpt`` (or the current weights)."""
    out: dict = {"val": {}, "test": {}, "confusion": {}}
    parts = ["val"] + (["test"] if len(dm.splits.test) else [])
    for part in parts:
        run = trainer.validate if part == "val" else trainer.test
        run(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
        result = module.results.get(part, {"metrics": {}, "confusion": []})
        out[part] = {k: v for k, v in trainer.callback_metrics.items() if k == f"{part}/loss"}
        out[part] = {"loss": float(out[part][f"{part}/loss"])} if out[part] else {}
        out[part].update(result["metrics"])
        out["confusion"][part] = result["confusion"]
    return out


def _relative(path: str | None, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _defining(overrides: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in overrides.items() if k not in ("skip_done", "resume")}


def finished_record(run_dir: Path, overrides: dict[str, object]) -> dict | None:
    """An ok metrics.json for the same overrides, in this run folder or a sibling job's folder."""
    wanted = _defining(overrides)
    candidates = [run_dir / "metrics.json", *sorted(run_dir.parent.glob("*/metrics.json"))]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            record = read_metrics(path)
        except ValueError:
            continue
        if record.get("status") == "ok" and _defining(record.get("overrides", {})) == wanted:
            return record
    return None


def train(cfg: DictConfig) -> dict:
    """Run one configuration end to end; always leaves ``metrics.json`` in the run folder.

    With ``skip_done=true`` a configuration + fold that already has an ok metrics.json in this
    folder or a sibling job's folder (a sweep run again into the same ``hydra.sweep.dir``) is
    skipped; failed ones run again.
    """
    run_dir = Path(cfg.paths.output_dir)
    overrides = run_overrides(cfg)
    if cfg.get("skip_done"):
        done = finished_record(run_dir, overrides)
        if done is not None:
            log.info(
                "skipping %s: finished in %s", done.get("config_key"), done["paths"]["run_dir"]
            )
            return {**done, "skipped": True}
    run_dir.mkdir(parents=True, exist_ok=True)
    fold = cfg.fold.get("index", 0)
    record = base_record(overrides, cfg.seed, fold, cfg.fold.get("n_folds", 1))
    record["paths"] = {"run_dir": str(run_dir.resolve()), "config": ".hydra/config.yaml"}
    metrics_path = run_dir / "metrics.json"
    try:
        L.seed_everything(cfg.seed, workers=True)
        dm = build_datamodule(cfg, run_dir)
        record.update(
            {
                "task": dm.task,
                "classes": dm.classes,
                "sizes": dm.splits.sizes(),
                "monitor": cfg.monitor,
                "monitor_mode": cfg.monitor_mode,
            }
        )
        model = build_model(cfg, dm)
        if not isinstance(model, torch.nn.Module):  # a scikit-learn baseline: no Lightning loop
            record.update(model.fit_evaluate(dm))
            record["paths"]["splits"] = "splits.json"
            record.update({"status": "ok", "versions": versions(), "git": git_revision()})
            write_json_atomic(metrics_path, record)
            return record
        module = build_module(cfg, dm, model)
        history, timing = History(run_dir / "history.csv"), Timing()
        trainer = build_trainer(cfg, run_dir, [history, timing])
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("resume"))
        best = _best_checkpoint(trainer)
        record["best_epoch"] = (
            int(torch.load(best, map_location="cpu", weights_only=False)["epoch"])
            if best
            else trainer.current_epoch - 1
        )
        record["epochs_run"] = trainer.current_epoch
        record.update(_evaluate(trainer, module, dm, best))
        record["timing"] = timing.summary()
        last = run_dir / "checkpoints" / "last.ckpt"
        record["paths"].update(
            {
                "checkpoint": _relative(best, run_dir),
                "last_checkpoint": _relative(str(last), run_dir) if last.exists() else None,
                "history": "history.csv",
                "splits": "splits.json",
            }
        )
        record["wandb"] = _wandb_entry(trainer)
        record.update({"status": "ok", "versions": versions(), "git": git_revision()})
        write_json_atomic(
            metrics_path, {k: v for k, v in record.items() if v is not None or k == "error"}
        )
        return record
    except BaseException as exc:
        record.update(
            {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )
        write_json_atomic(metrics_path, record)
        raise
    finally:
        _finish_wandb()


def _wandb_entry(trainer: L.Trainer) -> dict | None:
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if type(logger).__name__ == "WandbLogger" and experiment is not None:
            return {
                "project": experiment.project,
                "dir": str(Path(experiment.dir).parent),
                "id": experiment.id,
                "mode": "offline" if experiment.settings._offline else "online",
            }
    return None


def _finish_wandb() -> None:
    """Close an open W&B run so its offline files are complete before the next job starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def compose_config(
    overrides: list[str] | None = None, config_dir: str | Path | None = None
) -> DictConfig:
    """Compose ``conf/train.yaml`` with overrides outside a Hydra app (notebooks, tests)."""
    from hydra import compose, initialize_config_dir

    from medsweep.config import register_resolvers

    register_resolvers()
    config_dir = Path(config_dir or Path(__file__).resolve().parents[2] / "conf").resolve()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    OmegaConf.set_struct(cfg, False)
    cfg.overrides = list(overrides or [])
    return cfg
