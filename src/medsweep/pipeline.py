"""The one wiring place: builds data, model, module, trainer from a composed config and runs them."""

from __future__ import annotations

import inspect
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from medsweep.lazy_import import deferred, forwarding

# torchmetrics imports scipy.signal (0.7-1 s) for its audio metrics, and patches ``hamming`` into
# it when missing for an audio package: imported when something uses it, not by every run
with deferred(
    "scipy.signal", attributes={"hamming": forwarding("scipy.signal.windows", "hamming")}
):
    import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from medsweep.allocator import keep_freed_memory
from medsweep.callbacks import CarryCheckpoints, EpochSeeds, History, Timing
from medsweep.checkpoint_io import DeferredCheckpointIO
from medsweep.checkpoints import checked_checkpoint, load_checkpoint
from medsweep.config_check import check_config
from medsweep.data.datamodule import (
    ImageDataModule,
    ImageDataset,
    available_cpus,
    resolve_pin_memory,
)
from medsweep.data.transforms import resolve_normalization
from medsweep.losses import check_loss_output, loss_arguments
from medsweep.metrics import evaluate_probabilities
from medsweep.module import ClassificationModule, dense_targets
from medsweep.predictions import prediction_frame, write_predictions
from medsweep.results import (
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RunRecord,
    config_hash,
    keep_previous,
    parse_overrides,
    read_metrics,
)
from medsweep.tracking import build_loggers, log_summary, run_entry

if TYPE_CHECKING:
    from medsweep.models.classical import ClassicalClassifier

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
        normalization=resolve_normalization(
            data.normalization,
            backbone=cfg.model.get(
                "backbone" if cfg.model.get("features") == "backbone" else "name"
            ),
            pretrained=bool(cfg.model.get("pretrained", False)),
        ),
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        train_albumentations=[instantiate(op) for op in aug.get("albumentations") or []],
        train_monai=[instantiate(op) for op in aug.get("monai") or []],
        seed=cfg.seed,
        splits_path=run_dir / "splits.json" if run_dir else None,
        pin_memory=resolve_pin_memory(
            data.get("pin_memory", False), cfg.get("trainer", {}).get("accelerator")
        ),
        train_sampler=balance.sampler,
        train_index_hook=balance.train_indices,
        persistent_workers=data.get("persistent_workers", True),
        prefetch_factor=data.get("prefetch_factor", 2),
        cache=data.get("cache", "none"),
        cpus=job_cpus(),  # this job's share when a launcher runs several at once
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
    target = get_object(cfg.loss._target_)
    loss = instantiate(cfg.loss, **loss_arguments(target, dm.task, balance_kwargs))
    sample = torch.as_tensor(np.asarray(train_labels[:2]))
    check_loss_output(
        loss,
        torch.zeros(len(sample), dm.output_units),
        dense_targets(sample, dm.task, dm.output_units),
        cfg.loss._target_,
    )
    sched = cfg.scheduler
    trainer = OmegaConf.to_container(
        cfg.trainer, resolve=True
    )  # its module options as plain values
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
        channels_last=bool(trainer.get("channels_last", False)),
        compile=trainer.get("compile", False),
    )


def _instantiate_dict(group: DictConfig | None) -> list:
    return [instantiate(v) for v in (group or {}).values() if v is not None and "_target_" in v]


def torch_threads(requested: int | None) -> int:
    """Torch threads for a run: ``requested``, else $OMP_NUM_THREADS, else physical cores per job.

    The cores are those the process may run on; a Hydra launcher with ``n_jobs`` (joblib) runs
    that many jobs at once, each getting an equal share (at least one).
    """
    import os

    import psutil

    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"trainer.threads={requested} must be >= 1 or null (automatic)")
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    logical = os.cpu_count() or 1
    allowed = available_cpus()
    cores = min(psutil.cpu_count(logical=False) or logical, allowed)
    return max(1, cores // parallel_jobs(allowed))


def parallel_jobs(allowed: int) -> int:
    """Jobs run at once: a Hydra launcher's ``n_jobs`` (joblib), else 1."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        if n_jobs is not None:
            # joblib's convention: -1 is every CPU, -2 all but one, ...
            return max(1, int(n_jobs) if n_jobs > 0 else allowed + 1 + int(n_jobs))
    return 1


def job_cpus() -> int:
    """Logical CPUs of this job: those the process may run on, shared among parallel jobs, and
    at most $MEDSWEEP_JOB_CPUS when set (the CPUs a launcher gives each job, as local_gpus does).

    $OMP_NUM_THREADS is not read: it caps torch's threads in a process, not the loader's workers.
    """
    import os

    allowed = available_cpus()
    share = max(1, allowed // parallel_jobs(allowed))
    env = os.environ.get("MEDSWEEP_JOB_CPUS", "").strip()
    return min(share, int(env)) if env.isdigit() and int(env) > 0 else share


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: list) -> L.Trainer:
    """Trainer from ``cfg.trainer`` with the callbacks and loggers of their groups.

    Sets torch's intra-op threads from ``trainer.threads`` (see ``torch_threads``); read the count
    back with ``torch.get_num_threads()``.
    """
    from medsweep.config import quiet_library_noise

    quiet_library_noise()
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    threads = torch_threads(trainer_cfg.pop("threads", None))
    for key in ("channels_last", "compile"):  # the module's, see build_module
        trainer_cfg.pop(key, None)
    torch.set_num_threads(threads)
    if trainer_cfg.pop("keep_freed_memory", False) and not keep_freed_memory():
        log.info("trainer.keep_freed_memory: not glibc; the allocator is left as it is")
    callbacks = _instantiate_dict(cfg.get("callbacks")) + extra_callbacks
    policy = cfg.finetune.get("policy")
    if policy:
        accepted = inspect.signature(get_class(policy._target_)).parameters
        known = {"pretrained": bool(cfg.model.get("pretrained", False))}
        callbacks.append(instantiate(policy, **{k: v for k, v in known.items() if k in accepted}))
    loggers = build_loggers(cfg)  # W&B runs named and grouped by configuration and sweep
    log.info("torch threads: %d", threads)
    return instantiate(
        trainer_cfg, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )


def _checkpoints_written(trainer: L.Trainer, raise_error: bool = True) -> None:
    """Wait for the checkpoint files a writer thread is writing (DeferredCheckpointIO)."""
    io = trainer.strategy.checkpoint_io
    if not isinstance(io, DeferredCheckpointIO):
        return
    try:
        io.wait()
    except RuntimeError:
        if raise_error:
            raise
        log.exception("the checkpoints of a failed run")


def _best_epoch(trainer: L.Trainer, best: str | None) -> int:
    """The epoch of the best checkpoint: from its copy in memory while its file is being
    written, else from the file (weights only: a file handed in by ``resume`` is checked)."""
    if not best:
        return trainer.current_epoch - 1
    io = trainer.strategy.checkpoint_io
    held = io.held(best) if isinstance(io, DeferredCheckpointIO) else None
    checkpoint = held if held is not None else load_checkpoint(best, "best checkpoint", mmap=True)
    return int(checkpoint["epoch"])


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    path = monitored[0].best_model_path if monitored else ""
    return path or None


def _evaluate(
    trainer: L.Trainer, module: ClassificationModule, dm: ImageDataModule, ckpt: str | None
) -> dict[str, dict]:
    """Validation and test metrics, per-sample probabilities and targets at ``ckpt``."""
    parts: dict[str, dict] = {}
    module.collect = {"val", "test"}
    try:
        for part in ["val"] + (["test"] if len(dm.splits.test) else []):
            run = trainer.validate if part == "val" else trainer.test
            run(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
            result = module.results.get(part, {"metrics": {}, "confusion": []})
            loss = trainer.callback_metrics.get(f"{part}/loss")
            probs, targets = module.take_collected(part)
            parts[part] = {
                "metrics": {
                    **({"loss": float(loss)} if loss is not None else {}),
                    **result["metrics"],
                },
                "confusion": result["confusion"],
                "probs": probs.numpy(),
                "targets": targets.numpy(),
            }
    finally:
        module.collect = set()
    return parts


def _relative(path: str | None, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def finished_record(run_dir: Path, chash: str, fold: int, seed: int) -> dict | None:
    """An ok metrics.json of the same configuration (config hash), fold and seed, in this run
    folder or a sibling job's folder."""
    own = run_dir / METRICS_FILE
    siblings = sorted(p for p in run_dir.parent.glob(f"*/{METRICS_FILE}") if p != own)
    for path in [own, *siblings]:
        if not path.is_file():
            continue
        try:
            record = read_metrics(path)
        except ValueError:
            continue
        if (
            record.get("status") == "ok"
            and record.get("config_hash") == chash
            and record.get("fold") == fold
            and record.get("seed") == seed
        ):
            return record
    return None


def _job_number() -> int | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return int(hydra_cfg.job.num) if hydra_cfg.mode == RunMode.MULTIRUN else None


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The run's resolved configuration, beside metrics.json (prediction and the app read it)."""
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's app resolves: keep it unresolved
        text = OmegaConf.to_yaml(cfg)
    (run_dir / CONFIG_FILE).write_text(text)


def sample_ids(dm: ImageDataModule, indices) -> list[str]:
    """File paths of the samples at ``indices`` of the data source, or their index."""
    paths = getattr(dm.source, "paths", None)
    if paths is not None:
        return [str(paths[int(i)]) for i in indices]
    return [str(int(i)) for i in indices]


def _record_parts(
    record: RunRecord, dm: ImageDataModule, parts: dict[str, dict], run_dir: Path
) -> None:
    """Metrics and confusion of each part into the record; per-sample predictions to their file."""
    frames = []
    for part, out in parts.items():
        setattr(record, part, out["metrics"])
        record.confusion[part] = out["confusion"]
        indices = dm.datasets[part].indices
        if len(out["probs"]) < len(indices):  # limit_*_batches / fast_dev_run: the first batches
            log.info("%s predictions cover %d of %d samples", part, len(out["probs"]), len(indices))
            indices = indices[: len(out["probs"])]
        # several devices: the distributed sampler padded the list with repeats at its end
        out["probs"], out["targets"] = out["probs"][: len(indices)], out["targets"][: len(indices)]
        frames.append(
            prediction_frame(
                part,
                indices,
                sample_ids(dm, indices),
                record.fold,
                out["targets"],
                out["probs"],
                dm.task,
                dm.classes,
            )
        )
    path = write_predictions(frames, run_dir / PREDICTIONS_FILE)
    record.paths["predictions"] = path.name


def fit_classical(model: ClassicalClassifier, dm: ImageDataModule) -> tuple[dict, dict[str, dict]]:
    """Fit a scikit-learn baseline on the training part (no augmentation) and predict val/test.

    Returns the record's extra fields (timing, estimator description) and the parts' outputs.
    """
    # scikit-learn's estimators are imported by the classical models only (not before a first step)
    from medsweep.models.classical import extract_features, thread_limit

    model.check_data(dm.output_units, dm.channels)
    task, classes = dm.task, list(dm.classes)
    train = dm.datasets["train"]
    indices = model.select_train(train.indices, train.labels())
    plain = dm.datasets["val"].transform
    train = ImageDataset(train.source, indices, train.channels, plain)
    model.warn_normalization(dm.normalization)
    with thread_limit(model.n_threads):
        start = time.perf_counter()
        net = model.feature_net(dm.channels)
        x_train, y_train = extract_features(train, dm.batch_size, dm.num_workers, net)
        model.fit(x_train, y_train, task)
        fit_s = time.perf_counter() - start
        parts: dict[str, dict] = {}
        for part in ["val"] + (["test"] if len(dm.splits.test) else []):
            x, y = extract_features(dm.datasets[part], dm.batch_size, dm.num_workers, net)
            probs = model.predict_proba(x, task, len(classes))
            metrics, confusion = evaluate_probabilities(probs, y, task, classes)
            parts[part] = {"metrics": metrics, "confusion": confusion, "probs": probs, "targets": y}
    log.info(
        "classical %s on %s features (%d x %d) fitted in %.1f s",
        model.estimator,
        model.features,
        *x_train.shape,
        fit_s,
    )
    extra = {
        "best_epoch": 0,
        "epochs_run": 1,
        "timing": {
            "fit_s": fit_s,
            "s_per_epoch": fit_s,
            "train_img_per_s": len(x_train) / max(fit_s, 1e-9),
        },
        "classical": model.describe(len(x_train), x_train.shape[1]),
    }
    return extra, parts


def fit_lightning(
    cfg: DictConfig, dm: ImageDataModule, model: torch.nn.Module, record: RunRecord, run_dir: Path
) -> dict[str, dict]:
    """Train with Lightning, then evaluate val and test at the best checkpoint."""
    module = build_module(cfg, dm, model)
    history, timing = History(run_dir / "history.csv"), Timing()
    extra = [history, timing, EpochSeeds(cfg.seed), CarryCheckpoints()]
    trainer = build_trainer(cfg, run_dir, extra)
    record.threads = torch.get_num_threads()
    resume = checked_checkpoint(cfg.get("resume"), "resume")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
        # several devices: the first rank writes the buffered checkpoints as fit ends; the
        # others wait here so that none loads best.ckpt before it is on disk (one device: a
        # thread writes them while the evaluation reads the best weights from memory)
        trainer.strategy.barrier("checkpoints written")
        best = _best_checkpoint(trainer)
        record.best_epoch = _best_epoch(trainer, best)
        parts = _evaluate(trainer, module, dm, best)
        _checkpoints_written(trainer)
    except BaseException:
        _checkpoints_written(trainer, raise_error=False)  # the files, before the run is failed
        raise
    record.epochs_run = trainer.current_epoch
    log_summary(trainer, parts, dm.classes)  # best-checkpoint metrics and charts to W&B
    record.timing = timing.summary()
    last = run_dir / "checkpoints" / "last.ckpt"
    record.paths.update(
        {
            "checkpoint": _relative(best, run_dir),
            "last_checkpoint": _relative(str(last), run_dir) if last.exists() else None,
            "history": "history.csv",
        }
    )
    record.wandb = run_entry(trainer)
    return parts


def train(cfg: DictConfig) -> dict:
    """Run one configuration end to end; always leaves ``metrics.json`` in the run folder.

    ``metrics.json`` says ``running`` (with the process) from the start, then ``ok`` or
    ``failed``. A finished run already in the folder is moved to ``.previous/`` first. With
    ``skip_done=true`` a run whose configuration (resolved config hash), fold and seed already
    have an ok metrics.json in this folder or a sibling job's folder is skipped; failed ones and
    those of an edited configuration run again.
    """
    run_dir = Path(cfg.paths.output_dir)
    overrides = run_overrides(cfg)
    chash = config_hash(cfg)
    fold, seed = int(cfg.fold.get("index", 0) or 0), int(cfg.seed)
    if cfg.get("skip_done"):
        done = finished_record(run_dir, chash, fold, seed)
        if done is not None:
            log.info(
                "skipping %s: finished in %s", done.get("config_key"), done["paths"]["run_dir"]
            )
            return {**done, "skipped": True}
    run_dir.mkdir(parents=True, exist_ok=True)
    # with several devices every rank runs this function; only the first writes the run's files
    primary = rank_zero_only.rank == 0
    if primary:
        keep_previous(run_dir)
    record = RunRecord.start(
        overrides,
        seed,
        fold,
        cfg.fold.get("n_folds", 1),
        run_dir,
        config_hash=chash,
        job=_job_number(),
        monitor=cfg.monitor,
        monitor_mode=cfg.monitor_mode,
    )
    save = record.write if primary else (lambda _: None)
    save(run_dir)
    try:
        if primary:
            _save_config(cfg, run_dir)
        # timm imports W&B for its own scripts' logging (about 0.5 s before the first step): it
        # gets a stand-in that imports W&B when used; the W&B logger imports it as usual
        with deferred("wandb"):
            import timm  # noqa: F401
        check_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        dm = build_datamodule(cfg, run_dir)
        record.task, record.classes = dm.task, list(dm.classes)
        record.sizes = dm.splits.sizes()
        record.data = {"name": dm.source.name, "n": len(dm.source), "loader": dm.loader_settings}
        record.data_check = getattr(dm, "data_check", None)
        record.paths["splits"] = "splits.json"
        save(run_dir)
        model = build_model(cfg, dm)
        if isinstance(model, torch.nn.Module):
            parts = fit_lightning(cfg, dm, model, record, run_dir)
        else:  # a scikit-learn baseline: fitted once, no Lightning loop
            extra, parts = fit_classical(model, dm)
            for key, value in extra.items():
                setattr(record, key, value)
        if primary:
            _record_parts(record, dm, parts, run_dir)
        record.finish("ok")
        save(run_dir)
        return record.to_dict()
    except BaseException as exc:
        record.finish("failed", exc, traceback.format_exc())
        save(run_dir)
        raise
    finally:
        _finish_wandb()


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
