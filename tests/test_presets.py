"""Study presets (conf/experiment/) and their named grids (conf/sweep/), run through the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from helpers import CONF, ROOT, compose, run
from omegaconf import DictConfig, ListConfig, OmegaConf

# the preset's own model at 32 px, one batch per stage
QUICK = ["trainer=debug", "data.image_size=32", "data.batch_size=8", "callbacks.progress_bar=null"]
# groups whose options a preset or a grid may choose (experiment and sweep select presets)
OPTION_GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "sweep")
)


def _names(group: str) -> list[str]:
    """Every option under ``conf/<group>/``, subfolders included (``fashion_benchmark/mlp_pixels``)."""
    return sorted(
        p.relative_to(CONF / group).with_suffix("").as_posix()
        for p in (CONF / group).rglob("*.yaml")
    )


EXPERIMENTS = _names("experiment")
SWEEPS = _names("sweep")


@cache
def _hydra_compose(overrides: tuple[str, ...]) -> DictConfig:
    """``conf/train.yaml`` composed with its ``hydra`` node (sweeper params, runtime choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from medsweep.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def _choices(cfg: DictConfig) -> dict[str, str]:
    return {g: cfg.hydra.runtime.choices[g] for g in OPTION_GROUPS}


def _fields(node, prefix: str = "") -> set[str]:
    """Dotted paths of every field under ``node`` (lists count as one field)."""
    if not isinstance(node, DictConfig):
        return {prefix}
    out: set[str] = set()
    for key in node.keys():
        value = node._get_node(key)
        path = f"{prefix}.{key}" if prefix else str(key)
        out |= (
            _fields(value, path)
            if isinstance(value, DictConfig) and not value._is_none()
            else {path}
        )
    return out


def _unknown_fields(overrides: list[str]) -> list[str]:
    """Fields the composed config has that its chosen group options do not define.

    A preset that sets ``finetune.policy.head_epochs`` breaks when a grid swaps in
    ``finetune=full`` (whose policy is null): that key would show up here, as would a misspelt one.
    """
    cfg = _hydra_compose(tuple(overrides))
    plain = _hydra_compose(tuple(f"{g}={c}" for g, c in _choices(cfg).items()))
    return sorted(
        f for g in OPTION_GROUPS if g in cfg for f in _fields(cfg[g], g) - _fields(plain[g], g)
    )


def _touched(preset: str) -> set[str]:
    """Config groups whose fields a preset (or a preset it includes) sets."""
    body = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    groups = {k for k in body if k != "defaults"}
    for entry in body.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/experiment/"):
            groups |= _touched(entry.removeprefix("/experiment/"))
    return groups


def _sweep_params(name: str) -> dict[str, list[str]]:
    """The grid of ``conf/sweep/<name>.yaml``: each param's values, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _hydra_compose((f"sweep={name}",)).hydra.sweeper.params
    parser = OverridesParser.create()
    grid = {}
    for key, value in params.items():
        override = parser.parse_overrides([f"{key}={value}"])[0]
        grid[key] = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
    return grid


def _first_job(name: str) -> list[str]:
    return [f"sweep={name}", *(f"{k}={v[0]}" for k, v in _sweep_params(name).items())]


def _quick(overrides: list[str], tmp_path: Path) -> list[str]:
    """Fast overrides for a run; a classical baseline also gets a small training subset."""
    cfg = compose([*overrides, *QUICK], tmp_path)
    classical = "max_train_samples" in cfg.model
    extra = ["model.max_train_samples=300", "model.n_threads=1"] if classical else []
    return [*overrides, *QUICK, *extra]


def _check_ok(record: dict, run_dir: Path) -> None:
    assert record["status"] == "ok", record.get("error")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "ok"
    assert saved["val"] and saved["test"]


def test_every_preset_and_grid_is_found():
    assert {
        "melanoma_binary",
        "brain_mri",
        "ich_multilabel",
        "isic_multiclass",
        "fashion_benchmark",
    } <= set(EXPERIMENTS)
    assert all(s.split("/")[0] in EXPERIMENTS for s in SWEEPS)
    assert {"brain_mri/balance", "fashion_benchmark/arms"} <= set(SWEEPS)


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_sets_only_fields_its_options_define(preset):
    assert _unknown_fields([f"experiment={preset}"]) == []


def _leaves(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, DictConfig):
        out: dict[str, object] = {}
        for key in node.keys():
            out.update(_leaves(node._get_node(key), f"{prefix}.{key}" if prefix else str(key)))
        return out
    value = OmegaConf.to_container(node) if isinstance(node, ListConfig) else node._value()
    return {prefix: value}


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_values_reach_the_composed_config(preset):
    """Nothing later in the defaults list (train.yaml's own keys, say) silently replaces them."""
    body = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    body.pop("defaults", None)
    cfg = _hydra_compose((f"experiment={preset}",))
    for path, value in _leaves(body).items():
        got = OmegaConf.select(cfg, path)
        got = OmegaConf.to_container(got) if isinstance(got, ListConfig) else got
        assert got == value, f"{preset} sets {path}={value!r}; the composed config has {got!r}"


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_runs_end_to_end(preset, tmp_path):
    record = run(_quick([f"experiment={preset}"], tmp_path), tmp_path)
    _check_ok(record, tmp_path)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_grid_names_existing_options_and_fields(sweep):
    grid = _sweep_params(sweep)
    assert "fold.index" in grid, "every study grid repeats its configurations over the folds"
    first = _first_job(sweep)
    cfg = _hydra_compose(tuple(first))
    preset = cfg.hydra.runtime.choices.experiment
    for key, values in grid.items():
        if (CONF / key).is_dir():  # a config group: every value is one of its options
            missing = [v for v in values if v not in _names(key)]
            assert not missing, f"{sweep}: {key} has no option {missing}; options: {_names(key)}"
            for value in values if key in _touched(preset) else []:
                # the preset's fields exist in every option the grid swaps in
                job = [*first, f"{key}={value}"]
                assert _unknown_fields(job) == [], f"{sweep}: {key}={value}"
        else:
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (
                f"{sweep}: {key} is not a field of the composed config"
            )
        if key == "model.name":
            import timm

            assert [v for v in values if not timm.is_model(v)] == []


def _fingerprint(overrides: list[str]) -> str:
    """The composed run config, resolved, minus the list of overrides that asked for it."""
    resolved = OmegaConf.to_container(compose(overrides, ROOT / "outputs" / "unused"), resolve=True)
    resolved.pop("overrides")
    return json.dumps(resolved, sort_keys=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_grid_first_job_runs_end_to_end(sweep, tmp_path):
    first = _first_job(sweep)
    preset = OmegaConf.select(
        _hydra_compose((f"sweep={sweep}",)), "hydra.runtime.choices.experiment"
    )
    if _fingerprint([*first, *QUICK]) == _fingerprint([f"experiment={preset}", *QUICK]):
        return  # the same run as the preset itself: test_preset_runs_end_to_end[preset] trains it
    record = run(_quick(first, tmp_path), tmp_path)
    _check_ok(record, tmp_path)
    assert record["overrides"]["fold.index"] == 0


def test_presets_keep_the_real_study_settings():
    def cfg(*overrides: str) -> DictConfig:
        return compose(list(overrides), ROOT / "outputs" / "unused")

    isic = cfg("experiment=isic_multiclass")
    assert (isic.trainer.accumulate_grad_batches, isic.finetune.backbone_lr_scale) == (2, 0.1)
    assert isic.trainer.precision == "32-true"  # runs on a CPU; the gpu trainer brings AMP
    assert cfg("experiment=isic_multiclass", "trainer=gpu").trainer.precision == "16-mixed"
    ich = cfg("experiment=ich_multilabel")
    assert (ich.data.image_size, ich.data.source.variant, ich.loss._target_.split(".")[-1]) == (
        512,
        "multilabel",
        "BCEWithLogitsLoss",
    )
    melanoma = cfg("experiment=melanoma_binary")
    assert (melanoma.model.head, melanoma.data.source.variant) == ("mlp", "binary")
    assert melanoma.scheduler.monitor == melanoma.callbacks.early_stopping.monitor == "val/auroc"
    brain = cfg("experiment=brain_mri")
    assert (brain.model.name, brain.optimizer.momentum, brain.optimizer.lr) == (
        "resnet18",
        0.9,
        1e-3,
    )
    # a command-line choice wins over the preset's, as sweeps need
    assert cfg("experiment=brain_mri", "balance=oversample").balance.oversample is True


# -- one named grid as a user runs it: make sweep, then medsweep report ---------------------------

GRID_ARGS = (
    "fold.n_folds=3 'fold.index=range(3)' balance=class_weights,oversample model=small_cnn "
    "data.image_size=16 trainer.max_epochs=1 +trainer.limit_train_batches=3 "
    "callbacks.progress_bar=null"
)


def test_brain_mri_balance_grid_runs_and_reports(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "WANDB_MODE": "disabled"}
    stamp = ROOT / ".venv" / ".stamp-install"  # never reinstall from a test
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            str(stamp),
            "sweep",
            f"PY={sys.executable}",
            "SWEEP=brain_mri/balance",
            f"ARGS={GRID_ARGS} hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert sorted((r["overrides"]["balance"], r["fold"]) for r in records) == [
        (b, f) for b in ("class_weights", "oversample") for f in range(3)
    ]
    assert {r["n_folds"] for r in records} == {3}

    pytest.importorskip("medsweep.report")  # the report command lands separately
    script = Path(sys.executable).parent / "medsweep"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "medsweep.cli"]
    report = subprocess.run(
        [*command, "report", str(sweep_dir), "--no-figures", "--no-wandb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    rows = [line for line in report.stdout.splitlines() if "±" in line]
    for balance in ("class_weights", "oversample"):
        assert any(f"balance={balance}" in line and "3/3" in line for line in rows), report.stdout
