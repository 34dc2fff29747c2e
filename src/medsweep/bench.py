"""The suite against a plain PyTorch loop doing the same work: fit throughput, start-up, loader.

``medsweep bench`` (``make bench``) runs each workload as interleaved repeats in alternating order
(plain, suite, suite, plain, plain, suite, ...: a drift of the machine's speed, or a cost of
running first, falls on both sides alike) and writes a markdown table in which every figure is
the median of its repeats and a ratio against the plain loop measured in the same run, with the
geometric mean of the per-pair fit ratios and its 95 % interval; ``bench.json`` beside it holds
every recorded time. ``--tiny`` runs the same code on a few images in seconds (the tests).

The plain loop is what a person writes by hand: the same network (built by the suite's own
model factory), the same transformed images held as tensors, the same batch size, optimizer and
loss, a validation pass with AUROC every epoch and the best weights kept in memory.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TABLE_FILE = "benchmarks.md"
RAW_FILE = "bench.json"


@dataclass
class Workload:
    """One benchmark workload: the suite's overrides and the plain loop's matching settings."""

    name: str
    description: str
    overrides: list[str]
    epochs: int
    batch_size: int
    npz: dict | None = None  # arguments of small_npz when the workload reads a generated file
    extra: dict = field(default_factory=dict)
    # a near-free network: the fits measure the loop's own cost per fit, not a throughput target
    fixed_cost: bool = False


def fixed_cost_workload(tiny: bool, common: list[str]) -> Workload:
    """The in-memory workload with an MLP on 8 px images: what a fit costs beyond its network."""
    return Workload(
        "fixed",
        f"digits in memory at 8 px, an MLP, batch {32 if tiny else 64}, "
        f"{2 if tiny else 5} epochs: a near-free network, so the fit is the loop's own cost",
        [*common, "model=mlp", "data=digits", "data.image_size=8"],
        epochs=2 if tiny else 5,
        batch_size=32 if tiny else 64,
        fixed_cost=True,
    )


def small_npz(
    path: Path, n_train: int = 546, n_val: int = 117, n_test: int = 117, size: int = 28
) -> Path:
    """scikit-learn's digits resized to ``size`` px as a MedMNIST-format file, binary (digit < 5).

    A stand-in for a small medical set: ``n_train`` / ``n_val`` / ``n_test`` images drawn with a
    fixed seed, grayscale uint8, the predefined train / val / test parts of the file.
    """
    import cv2
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))[: n_train + n_val + n_test]
    images = np.clip(np.rint(bunch.images[order] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]
    )
    labels = (bunch.target[order] < 5).astype(np.int64)[:, None]
    cuts = np.cumsum([n_train, n_val])
    arrays = {}
    for part, idx in zip(("train", "val", "test"), np.split(np.arange(len(order)), cuts)):
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images[idx], labels[idx]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def workloads(tiny: bool, device: str = "cpu") -> list[Workload]:
    """The small-set workload (ResNet-18, 28 px, batch 128), the in-memory one (32 px, batch 64)
    and the fixed-cost one (the in-memory set with a near-free network)."""
    common = ["augmentation=none", "optimizer=adam", "callbacks.early_stopping=null"]
    if device == "cuda":
        common += ["trainer=gpu", "trainer.precision=32-true"]
    if tiny:
        return [
            Workload(
                "small",
                "tiny: 48 train images (digits < 5 at 28 px, npz), small CNN, batch 16, 2 epochs",
                [*common, "model=small_cnn", "data=npz", "data.channels=1", "data.image_size=28"],
                epochs=2,
                batch_size=16,
                npz={"n_train": 48, "n_val": 24, "n_test": 24},
            ),
            Workload(
                "memory",
                "tiny: digits in memory at 16 px, small CNN, batch 32, 2 epochs",
                [*common, "model=small_cnn", "data=digits", "data.image_size=16"],
                epochs=2,
                batch_size=32,
            ),
            fixed_cost_workload(tiny, common),
        ]
    return [
        Workload(
            "small",
            "546 train images (digits < 5 at 28 px, npz), ResNet-18 from scratch, batch 128, "
            "Adam, no augmentation, 20 epochs, validation every epoch",
            [*common, "model=resnet18", "data=npz", "data.channels=1", "data.image_size=28"],
            epochs=20,
            batch_size=128,
            npz={"n_train": 546},
        ),
        Workload(
            "memory",
            "digits in memory (1,257 train images, 10 classes) at 32 px, ResNet-18, batch 64, "
            "Adam, 5 epochs",
            [*common, "model=resnet18", "data=digits", "data.image_size=32"],
            epochs=5,
            batch_size=64,
        ),
        fixed_cost_workload(tiny, common),
    ]


def suite_overrides(work: Workload, data_dir: Path, threads: int) -> list[str]:
    """The complete override list of a suite run of ``work``."""
    out = [
        *work.overrides,
        f"trainer.max_epochs={work.epochs}",
        f"data.batch_size={work.batch_size}",
        f"trainer.threads={threads}",
    ]
    if work.npz is not None:
        out.append(f"data.source.path={data_dir / f'{work.name}.npz'}")
    return out


# ----------------------------------------------------------------------------- the plain loop


def _auroc(probs: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    try:
        if probs.ndim == 1:
            return float(roc_auc_score(targets, probs))
        return float(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    except ValueError:  # one class present
        return math.nan


def plain_fit(
    model,
    train: tuple,
    val: tuple,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 42,
    device: str = "cpu",
) -> dict:
    """Train ``model`` on tensors ``train = (x, y)`` as a hand-written loop; validate every epoch.

    Binary targets (one logit) use sigmoid BCE, others softmax CE; the best weights on validation
    AUROC are kept in memory. Returns fit seconds, images trained, best epoch and the wall-clock
    time of the first training step.
    """
    import torch
    import torch.nn.functional as F

    x_train, y_train = (t.to(device) for t in train)
    x_val, y_val = (t.to(device) for t in val)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    binary = y_train.ndim == 1 and int(y_train.max()) <= 1 and _outputs(model, x_train) == 1

    def loss_of(logits, y):
        if binary:
            return F.binary_cross_entropy_with_logits(logits.view(-1), y.float())
        return F.cross_entropy(logits, y)

    best, best_state, best_epoch, first_step_at, images = -math.inf, None, -1, None, 0
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if first_step_at is None:
                first_step_at = time.time()
            loss = loss_of(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(idx)
        model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [model(x_val[i : i + batch_size]) for i in range(0, len(x_val), batch_size)]
            )
            probs = logits.view(-1).sigmoid() if binary else logits.softmax(1)
            score = _auroc(probs.cpu().numpy(), y_val.cpu().numpy())
        if best_state is None or score > best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
    fit_s = time.perf_counter() - start
    return {
        "fit_s": fit_s,
        "images": images,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "first_step_at": first_step_at,
    }


def _outputs(model, x) -> int:
    import torch

    with torch.no_grad():
        model.eval()
        return int(model(x[:2]).shape[1])


def _stack(dataset) -> tuple:
    """A dataset's transformed images and targets as two tensors (the plain loop's data)."""
    import torch

    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------- measurements


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


# the suite's config folder; ``--config-dir`` benchmarks another one (e.g. a copy of an older conf/)
CONFIG_DIR: Path | None = None


def _compose(overrides: list[str], out_dir: Path):
    from medsweep.pipeline import compose_config

    return compose_config([*overrides, f"paths.output_dir={out_dir}"], CONFIG_DIR)


def _train_py(overrides: list[str]) -> list[str]:
    config = [f"--config-path={CONFIG_DIR.resolve()}"] if CONFIG_DIR is not None else []
    return [sys.executable, "train.py", *config, *overrides]


def fit_pairs(
    work: Workload, data_dir: Path, repeats: int, threads: int, device: str, scratch: Path
) -> dict:
    """Interleaved in-process fits, ``repeats`` pairs in ``plain_first`` order; their times.

    The suite sets glibc's allocator for its process (``trainer.keep_freed_memory``); the plain
    loop shares the process, so it is set before the first fit of either: these ratios measure
    the loop, the whole-process ones include the allocator's gain.
    """
    import lightning as L
    import torch

    from medsweep.allocator import keep_freed_memory
    from medsweep.pipeline import build_datamodule, build_model, train

    overrides = suite_overrides(work, data_dir, threads)
    cfg = _compose(overrides, scratch / f"{work.name}-data")
    if cfg.trainer.get("keep_freed_memory"):
        keep_freed_memory()
    dm = build_datamodule(cfg)
    train_xy, val_xy = _stack(dm.datasets["train"]), _stack(dm.datasets["val"])
    torch.set_num_threads(threads)

    def run_plain(r: int) -> dict:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic", False)))
        model = build_model(cfg, dm)
        started = time.time()
        done = plain_fit(model, train_xy, val_xy, work.epochs, work.batch_size, device=device)
        return {**done, "started_at": started}

    def run_suite(r: int) -> dict:
        started = time.time()
        record = train(_compose(overrides, scratch / f"{work.name}-suite-{r}"))
        torch.set_num_threads(threads)
        return {
            "fit_s": record["timing"]["fit_s"],
            "images": len(dm.datasets["train"]) * record["epochs_run"],
            "epochs": record["epochs_run"],
            "best_epoch": record["best_epoch"],
            "started_at": started,
        }

    plain, suite = interleaved(repeats, run_plain, run_suite)
    return {"plain": plain, "suite": suite, "n_train": len(dm.datasets["train"])}


def plain_first(repeat: int) -> bool:
    """The order of a pair: plain first in repeats 0, 3, 4, 7, 8, ... (ABBA ABBA ...).

    Within every four runs each side runs once first and once second, and their mean positions
    are equal, so a cost of running first and a linear drift of the machine's speed cancel out.
    """
    return repeat % 4 in (0, 3)


def interleaved(
    repeats: int, run_plain: Callable[[int], dict], run_suite: Callable[[int], dict]
) -> tuple[list[dict], list[dict]]:
    """``repeats`` pairs of ``run_plain(r)`` and ``run_suite(r)`` in ``plain_first`` order."""
    plain, suite = [], []
    for r in range(repeats):
        if plain_first(r):
            plain.append(run_plain(r))
            suite.append(run_suite(r))
        else:
            suite.append(run_suite(r))
            plain.append(run_plain(r))
    return plain, suite


def loader_and_step(
    work: Workload, data_dir: Path, threads: int, device: str, scratch: Path
) -> dict:
    """Images per second of the training loader alone and of the model's training step alone."""
    import torch

    from medsweep.pipeline import build_datamodule, build_model

    torch.set_num_threads(threads)
    cfg = _compose(suite_overrides(work, data_dir, threads), scratch / f"{work.name}-loader")
    dm = build_datamodule(cfg)
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up: worker start, first decode
        break
    rates = []
    for _ in range(3):
        start, n = time.perf_counter(), 0
        for x, _y in loader:
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
    model = build_model(cfg, dm).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = next(iter(loader))
    x, y = x.to(device), y.to(device)
    binary = dm.task == "binary"

    def step():
        logits = model(x)
        if binary:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1), y.float())
        else:
            loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    steps = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        steps.append(len(x) / (time.perf_counter() - start))
    return {"loader_img_s": rates, "step_img_s": steps}


def _process(cmd: list[str], timeout: float = 900) -> tuple[float, float, int]:
    """Run ``cmd``; its wall seconds, start wall-clock time and exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    t0 = time.time()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return time.perf_counter() - start, t0, done.returncode


def process_pairs(
    work: Workload, data_dir: Path, repeats: int, threads: int, scratch: Path
) -> dict:
    """Whole processes, interleaved in ``plain_first`` order: the plain loop's script and
    ``train.py``; plus start-up times.

    The first training step is read from each process's own record (``first_step_at``).
    """
    py = sys.executable
    npz = data_dir / f"{work.name}.npz"
    overrides = suite_overrides(work, data_dir, threads)

    def run_plain(r: int) -> dict:
        out = scratch / f"plain-process-{r}.json"
        args = [npz, out, work.epochs, work.batch_size, threads]
        wall, t0, rc = _process([py, "-m", "medsweep.bench", "plain", *map(str, args)])
        rec = json.loads(out.read_text()) if rc == 0 and out.exists() else {}
        return {
            "wall_s": wall,
            "rc": rc,
            "first_step_s": _since(rec, t0),
            "fit_s": rec.get("fit_s"),
            "started_at": t0,
        }

    def run_suite(r: int) -> dict:
        run_dir = scratch / f"suite-process-{r}"
        wall, t0, rc = _process(_train_py([*overrides, f"hydra.run.dir={run_dir}"]))
        metrics = run_dir / "metrics.json"
        rec = json.loads(metrics.read_text()) if metrics.exists() else {}
        timing = rec.get("timing") or {}
        return {
            "wall_s": wall,
            "rc": rc,
            "first_step_s": _since(timing, t0),
            "fit_s": timing.get("fit_s"),
            "started_at": t0,
        }

    plain, suite = interleaved(repeats, run_plain, run_suite)
    help_s, error_s, value_s = [], [], []
    for _ in range(repeats):
        help_s.append(_process(_train_py(["--help"]))[0])
        error_s.append(_process(_train_py(["loss=no_such_loss"]))[0])
        value_s.append(_process(_train_py(["data.image_size=0"]))[0])
    return {
        "plain": plain,
        "suite": suite,
        "help_s": help_s,
        "config_error_s": error_s,
        "value_error_s": value_s,
    }


def _since(record: dict, t0: float) -> float | None:
    at = record.get("first_step_at")
    return None if at is None else float(at) - t0


def plain_process(npz: str, out: str, epochs: int, batch_size: int, threads: int) -> None:
    """The plain loop as its own process on a workload's npz file (the whole-process comparison).

    It imports only numpy, torch and timm: the network is timm's ResNet-18 with a linear head
    on pooled features, as the suite builds it; images are scaled to [-1, 1] as ``half``.
    """
    import timm
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(42)
    with np.load(npz) as f:
        parts = {p: (f[f"{p}_images"], f[f"{p}_labels"][:, 0]) for p in ("train", "val")}

    def tensors(images, labels):
        x = torch.from_numpy(images).float().div_(255.0).sub_(0.5).div_(0.5).unsqueeze(1)
        return x, torch.from_numpy(labels.astype(np.int64))

    backbone = timm.create_model("resnet18", num_classes=0, in_chans=1)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 1))
    result = plain_fit(model, tensors(*parts["train"]), tensors(*parts["val"]), epochs, batch_size)
    Path(out).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- the table


def environment(threads: int, device: str) -> dict:
    """Device, core count and library versions of this run."""
    import lightning
    import timm
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {
        "device": gpu or f"CPU: {cpu}",
        "cores": os.cpu_count(),
        "threads": threads,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def pair_ratios(plain: list[dict], suite: list[dict]) -> list[float]:
    """Each pair's suite / plain throughput (images per second), pairs in recorded order."""
    return [
        (s["images"] / s["fit_s"]) / (p["images"] / p["fit_s"])
        for p, s in zip(plain, suite)
        if p.get("fit_s") and s.get("fit_s")
    ]


def geometric_interval(ratios: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Geometric mean of ``ratios`` and its t-interval (the mean and interval of their logs:
    the paired t-test with no resampling correction)."""
    from medsweep.report.stats import corrected_resampled_ttest

    test = corrected_resampled_ttest(np.log(np.asarray(ratios, dtype=float)), 0.0, level)
    return math.exp(test.mean_diff), math.exp(test.ci_low), math.exp(test.ci_high)


def fixed_cost_rows(name: str, fit: dict) -> list[dict]:
    """The fixed-cost workload's rows: median fit seconds, and the median per-pair difference
    (suite minus plain): what the suite's loop adds to every fit, whatever the network."""
    plain_s = _median([p["fit_s"] for p in fit["plain"]])
    suite_s = _median([s["fit_s"] for s in fit["suite"]])
    extra = _median([s["fit_s"] - p["fit_s"] for p, s in zip(fit["plain"], fit["suite"])])
    row = {"workload": name, "plain": math.nan, "ratio": math.nan, "target": "", "met": None}
    return [
        {**row, "figure": "fit seconds", "plain": plain_s, "suite": suite_s},
        {
            **row,
            "figure": "the loop's own cost per fit: suite - plain seconds, median of pairs",
            "suite": extra,
        },
    ]


def summarize(raw: dict) -> list[dict]:
    """Table rows from the recorded times: medians and the suite / plain throughput ratios.

    A fit ratio is plain median fit seconds over suite median fit seconds (per image trained),
    so 1.0 is parity and above 1 the suite is faster.
    """
    rows = []
    for name, work in raw["workloads"].items():
        fit = work["fit"]
        if work.get("fixed_cost"):
            rows.extend(fixed_cost_rows(name, fit))
            continue
        plain_rate = _median([p["images"] / p["fit_s"] for p in fit["plain"]])
        suite_rate = _median([s["images"] / s["fit_s"] for s in fit["suite"]])
        rows.append(
            {
                "workload": name,
                "figure": "fit throughput (train img/s, validation every epoch included)",
                "plain": plain_rate,
                "suite": suite_rate,
                "ratio": suite_rate / plain_rate,
                "target": ">= 0.97",
                "met": suite_rate / plain_rate >= 0.97,
            }
        )
        pairs = pair_ratios(fit["plain"], fit["suite"])
        if len(pairs) >= 2:
            mean, low, high = geometric_interval(pairs)
            rows.append(
                {
                    "workload": name,
                    "figure": f"fit throughput per pair: geometric mean of {len(pairs)} ratios "
                    f"[95 % interval {low:.3f}, {high:.3f}]",
                    "plain": math.nan,
                    "suite": math.nan,
                    "ratio": mean,
                    "target": "",
                    "met": None,
                }
            )
        plain_s = _median([p["fit_s"] for p in fit["plain"]])
        suite_s = _median([s["fit_s"] for s in fit["suite"]])
        rows.append(
            {
                "workload": name,
                "figure": "fit seconds",
                "plain": plain_s,
                "suite": suite_s,
                "ratio": plain_s / suite_s,
                "target": "",
                "met": None,
            }
        )
        ls = work.get("loader")
        if ls:
            loader, step = _median(ls["loader_img_s"]), _median(ls["step_img_s"])
            rows.append(
                {
                    "workload": name,
                    "figure": "training loader alone vs model step alone (img/s)",
                    "plain": step,
                    "suite": loader,
                    "ratio": loader / step,
                    "target": ">= 3",
                    "met": loader / step >= 3,
                }
            )
    proc = raw.get("process")
    if proc:
        plain_w = _median([p["wall_s"] for p in proc["plain"]])
        suite_w = _median([s["wall_s"] for s in proc["suite"]])
        rows.append(
            {
                "workload": "small",
                "figure": "whole process seconds",
                "plain": plain_w,
                "suite": suite_w,
                "ratio": plain_w / suite_w,
                "target": "",
                "met": None,
            }
        )
        plain_f = _median([p["first_step_s"] for p in proc["plain"]])
        suite_f = _median([s["first_step_s"] for s in proc["suite"]])
        rows.append(
            {
                "workload": "small",
                "figure": "process start -> first training step (s)",
                "plain": plain_f,
                "suite": suite_f,
                "ratio": plain_f / suite_f,
                "target": "suite <= 5 s",
                "met": suite_f <= 5,
            }
        )
        for key, label in (
            ("help_s", "`train.py --help` (s)"),
            ("config_error_s", "an unknown option: `loss=no_such_loss` (s)"),
            ("value_error_s", "a wrong plain value: `data.image_size=0` (s)"),
        ):
            if key not in proc:  # bench.json files written before the row existed
                continue
            value = _median(proc[key])
            rows.append(
                {
                    "workload": "start-up",
                    "figure": label,
                    "plain": math.nan,
                    "suite": value,
                    "ratio": math.nan,
                    "target": "about 1 s",
                    "met": None,
                }
            )
    return rows


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def render(raw: dict, rows: list[dict]) -> str:
    """The markdown table of a run, with its environment and workloads."""
    env = raw["environment"]
    lines = [
        f"## {'Tiny run (--tiny)' if raw['tiny'] else 'Full run'}: {env['date']}",
        "",
        f"Device: {env['device']}; {env['cores']} cores, torch threads {env['threads']}, "
        f"1-minute load average at start {env['load_avg_1m']}. Python {env['python']}, "
        f"torch {env['torch']}, Lightning {env['lightning']}, timm {env['timm']}, "
        f"numpy {env['numpy']}. Medians of {raw['repeats']} interleaved repeats in alternating "
        "order (plain first, suite first, suite first, plain first, ...).",
        "",
    ]
    for name, work in raw["workloads"].items():
        lines.append(f"- **{name}**: {work['description']}")
    lines += [
        "",
        "| workload | figure | plain loop | suite | ratio | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        met = {True: "yes", False: "no", None: ""}[row["met"]]
        lines.append(
            f"| {row['workload']} | {row['figure']} | {_fmt(row['plain'])} | "
            f"{_fmt(row['suite'])} | {_fmt(row['ratio'])} | {row['target']} | {met} |"
        )
    lines += [
        "",
        "Ratios: throughput suite / plain (seconds plain / suite), so 1.0 is parity and more is "
        "better for the suite; the loader row is the loader's img/s over the model step's.",
        "",
    ]
    return "\n".join(lines)


def run_bench(
    out: Path,
    tiny: bool = False,
    repeats: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    processes: bool | None = None,
    config_dir: Path | None = None,
) -> Path:
    """Run every workload and write ``out/benchmarks.md`` and ``out/bench.json``; returns the table.

    ``config_dir``: the suite's config folder (default: the repository's ``conf/``).
    """
    from medsweep.pipeline import torch_threads

    global CONFIG_DIR
    CONFIG_DIR = Path(config_dir).resolve() if config_dir else None

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = repeats or (2 if tiny else 4)
    threads = threads or torch_threads(None)
    processes = (not tiny) if processes is None else processes
    raw: dict = {"tiny": tiny, "repeats": repeats, "device": device, "workloads": {}}
    raw["config_dir"] = str(CONFIG_DIR) if CONFIG_DIR else "conf"
    raw["environment"] = environment(threads, device)
    with tempfile.TemporaryDirectory(prefix="medsweep-bench-") as tmp:
        scratch = Path(tmp)
        data_dir = scratch / "data"
        for work in workloads(tiny, device):
            if work.npz is not None:
                small_npz(data_dir / f"{work.name}.npz", **work.npz)
            entry = {
                "description": work.description,
                "overrides": suite_overrides(work, data_dir, threads),
            }
            entry["fit"] = fit_pairs(work, data_dir, repeats, threads, device, scratch)
            if work.fixed_cost:
                entry["fixed_cost"] = True
            else:
                entry["loader"] = loader_and_step(work, data_dir, threads, device, scratch)
            raw["workloads"][work.name] = entry
        if processes:
            small = workloads(tiny, device)[0]
            raw["process"] = process_pairs(small, data_dir, repeats, threads, scratch)
    rows = summarize(raw)
    raw["rows"] = rows
    (out / RAW_FILE).write_text(json.dumps(raw, indent=2, default=str))
    table = out / TABLE_FILE
    write_table(table, render(raw, rows))
    return table


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_table(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; in a file with bench markers, only between them (notes stay)."""
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    else:
        path.write_text(f"# Benchmarks\n\n{START}\n{text}\n{END}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medsweep.bench plain NPZ OUT EPOCHS BATCH THREADS``: the plain-loop process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["plain"] or len(args) != 6:
        print(main.__doc__, file=sys.stderr)
        return 2
    npz, out, epochs, batch, threads = args[1:]
    plain_process(npz, out, int(epochs), int(batch), int(threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
