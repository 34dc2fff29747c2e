"""The one result schema: ``metrics.json`` per run (``RunRecord``), written atomically.

Every writer (the pipeline, for Lightning and scikit-learn runs alike) builds a ``RunRecord``;
every reader (the report, evaluation, the app) goes through ``read_metrics``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# 2: status running with the process, config_hash, predictions file, data summary, job number
SCHEMA_VERSION = 2
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.parquet"
# where an earlier finished run of the same folder is kept when the folder is run again
PREVIOUS_DIR = ".previous"
STATUSES = ("running", "ok", "failed")
# overrides that select a replicate of a configuration rather than define it
REPLICATE_KEYS = ("fold.index", "seed", "resume", "skip_done")
# overrides that change where or how a run is logged or launched, never its result
IGNORED_KEYS = ("logger", "local", "+local")
IGNORED_PREFIXES = ("hydra.", "hydra/", "paths.")
# parts of the resolved config that cannot change a result: left out of the config hash
HASH_EXCLUDED = (
    "paths",
    "hydra",
    "overrides",
    "resume",
    "skip_done",
    "logger",
    "local",
    "callbacks.progress_bar",
    "trainer.threads",
    "trainer.plugins",
    "callbacks.last_checkpoint.interval_s",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "data.cache",
)


def parse_overrides(overrides: list[str]) -> dict[str, object]:
    """``["loss=focal", "+x=1"]`` -> ``{"loss": "focal", "x": 1}`` (numbers parsed, order kept)."""
    parsed: dict[str, object] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
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


def config_hash(cfg: Any) -> str:
    """A short hash of the resolved configuration that defines a run's result.

    Fold index and seed are replicate keys: they are set to constants before resolving, so a
    configuration's folds and seeds share one hash, while an edited preset or a changed default
    (anything in the resolved config but paths, logging and thread settings) changes it.
    """
    from omegaconf import DictConfig, OmegaConf, open_dict

    if isinstance(cfg, DictConfig):
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.seed = 0
            if "fold" in cfg and cfg.fold is not None and "index" in cfg.fold:
                cfg.fold.index = 0
            cfg.pop("hydra", None)
            # the run folder appears in interpolations (checkpoint dirs): one placeholder for all
            if isinstance(cfg.get("paths"), DictConfig):
                cfg.paths = {key: f"<{key}>" for key in cfg.paths}
        data = OmegaConf.to_container(cfg, resolve=True)
    else:
        data = json.loads(json.dumps(cfg, default=str))
    for dotted in HASH_EXCLUDED:
        _drop(data, dotted.split("."))
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop(node: Any, keys: list[str]) -> None:
    if not isinstance(node, dict) or keys[0] not in node:
        return
    if len(keys) == 1:
        node.pop(keys[0])
    else:
        _drop(node[keys[0]], keys[1:])


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
    path = Path(path)
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


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """What ``metrics.json`` holds; ``status`` is ``running`` from the start, then ``ok`` or ``failed``.

    ``val`` / ``test``: metric name -> value at the best checkpoint (``auroc/<class>`` per class).
    ``paths`` are relative to ``paths.run_dir`` (checkpoint, last_checkpoint, history, splits,
    predictions, config). ``process``: pid, host, start and end time of the process that ran it.
    """

    overrides: dict[str, Any]
    config_key: str
    fold: int
    n_folds: int
    seed: int
    schema: int = SCHEMA_VERSION
    status: str = "running"
    error: str | None = None
    traceback: str | None = None
    config_hash: str | None = None
    job: int | None = None
    task: str | None = None
    classes: list[str] | None = None
    data: dict[str, Any] | None = None
    sizes: dict[str, int] | None = None
    monitor: str | None = None
    monitor_mode: str | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, list] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str | None] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    data_check: dict[str, Any] | None = None
    classical: dict[str, Any] | None = None
    wandb: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    git: str | None = None
    created: str = field(default_factory=_now)

    @classmethod
    def start(
        cls,
        overrides: dict[str, Any],
        seed: int,
        fold: int,
        n_folds: int,
        run_dir: Path,
        **fields: Any,
    ) -> RunRecord:
        """A ``running`` record for this process."""
        record = cls(
            overrides=overrides,
            config_key=config_key(overrides),
            fold=int(fold),
            n_folds=int(n_folds),
            seed=int(seed),
            **fields,
        )
        record.paths = {"run_dir": str(Path(run_dir).resolve()), "config": CONFIG_FILE}
        record.process = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        return record

    def finish(
        self, status: str, error: BaseException | None = None, tb: str | None = None
    ) -> None:
        """Mark the record ``ok`` or ``failed`` and stamp versions, commit and end time."""
        if status not in STATUSES[1:]:
            raise ValueError(f"status={status!r}; a finished run is one of {STATUSES[1:]}")
        self.status = status
        if error is not None:
            self.error = f"{type(error).__name__}: {error}"
            self.traceback = tb
        self.versions = versions()
        self.git = git_revision()
        self.process = {**self.process, "finished": _now()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to metrics.json."""
        return dataclasses.asdict(self)

    def write(self, run_dir: Path) -> Path:
        """Write ``run_dir/metrics.json`` atomically."""
        path = Path(run_dir) / METRICS_FILE
        write_json_atomic(path, self.to_dict())
        return path


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Load one metrics.json (a file, or the run folder holding it) as a dict.

    Records of schema 1 (before the running status and the config hash) read as they are; a
    ``running`` record whose process is gone from this host reads as failed ("killed").
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    if data.get("status") == "running" and not process_alive(data.get("process") or {}):
        pid = (data.get("process") or {}).get("pid")
        data["status"] = "failed"
        data["error"] = data.get("error") or (
            f"killed: the run's process (pid {pid}) ended without finishing"
        )
    return data


def process_alive(process: dict[str, Any]) -> bool:
    """Whether the process of a running record still runs (True when on another host: unknown)."""
    pid, host = process.get("pid"), process.get("host")
    if not isinstance(pid, int):
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if pid == os.getpid():
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def keep_previous(run_dir: Path) -> Path | None:
    """Move a finished (ok) run's files out of the way before the folder is run again.

    They go to ``run_dir/.previous/<its start time>/`` (hidden: reports do not list it), so a new
    run in the same folder, ok or failed, never replaces a finished result. Hydra's own files
    (``.hydra``, the job log) stay. Returns the folder the old run went to, or None.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        old = read_metrics(path)
    except (OSError, ValueError):  # unreadable or not an object: nothing finished to keep
        return None
    if old.get("status") != "ok":
        return None
    stamp = str(old.get("created") or dt.datetime.now().isoformat(timespec="seconds"))
    target = run_dir / PREVIOUS_DIR / stamp.replace(":", "-")
    n = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        n += 1
    target.mkdir(parents=True)
    for item in run_dir.iterdir():
        if item.name in (PREVIOUS_DIR, ".hydra") or item.suffix == ".log":
            continue
        shutil.move(str(item), str(target / item.name))
    log.warning(
        "%s held a finished run (%s); it was moved to %s before this run",
        run_dir,
        old.get("config_key") or "default",
        target,
    )
    return target


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
        value = [record[p].get(name) for p in parts]
        table.add_row(name, *("—" if v is None else f"{v:.4f}" for v in value))
    console = Console()
    console.print(table)
    console.print(f"metrics.json in {record['paths']['run_dir']}")


def job_dir_name(override_dirname: str, limit: int = 96) -> str:
    """A sweep job's folder name from its overrides: the same configuration and fold always get
    the same folder, another never does (a readable prefix, and a hash when the text is cut or
    characters were replaced)."""
    text = str(override_dirname or "")
    if not text:
        return "default"
    safe = "".join(c if c.isalnum() or c in "=,._-+[]" else "_" for c in text)
    if safe == text and len(safe) <= limit:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[: limit - 9]}~{digest}"
