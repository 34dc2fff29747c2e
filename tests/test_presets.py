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
# a classical baseline fits once on the whole training part: a subset of 16 px images, one thread
QUICK_CLASSICAL = ["data.image_size=16", "model.max_train_samples=300", "model.n_threads=1"]
# groups of train.yaml's defaults list whose options a preset or a grid chooses (experiment and
# sweep choose presets)
OPTION_GROUPS = sorted(
    group
    for entry in OmegaConf.load(CONF / "train.yaml").defaults
    if isinstance(entry, DictConfig)
    for group in (str(next(iter(entry))).removeprefix("optional "),)
    if group not in ("experiment", "sweep")
)
UNUSED_DIR = ROOT / "outputs" / "unused"  # composed only, never written


def _options(group: str) -> list[str]:
    """Every option of ``conf/<group>/``, subfolders included (``fashion_benchmark/mlp_pixels``)."""
    return sorted(
        p.relative_to(CONF / group).with_suffix("").as_posix()
        for p in (CONF / group).rglob("*.yaml")
    )


EXPERIMENTS = _options("experiment")
SWEEPS = _options("sweep")


@cache
def _hydra_compose(overrides: tuple[str, ...]) -> DictConfig:
    """``conf/train.yaml`` composed with its ``hydra`` node (sweeper params, runtime choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from medsweep.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def _leaves(node, prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": value}`` for every field under ``node`` (a list is one field)."""
    if isinstance(node, DictConfig) and not node._is_none():
        out: dict[str, object] = {}
        for key in node:
            out.update(_leaves(node._get_node(key), f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, ListConfig) and not node._is_none():
        return {prefix: OmegaConf.to_container(node)}
    return {prefix: node._value()}


def _unknown_fields(overrides: list[str]) -> list[str]:
    """Fields of the composed config that its chosen group options do not define.

    A preset that set ``finetune.policy.head_epochs`` would break a grid that swaps in
    ``finetune=full`` (whose policy is null): the key would show up here, as would a misspelt one.
    """
    cfg = _hydra_compose(tuple(overrides))
    choices = {g: cfg.hydra.runtime.choices[g] for g in OPTION_GROUPS}
    plain = _hydra_compose(tuple(f"{g}={c}" for g, c in choices.items()))
    unknown = set()
    for group in OPTION_GROUPS:
        if group in cfg:
            unknown |= set(_leaves(cfg[group], group)) - set(_leaves(plain[group], group))
    return sorted(unknown)


def _touched(preset: str) -> set[str]:
    """Top-level keys a preset (or a preset it includes) sets values under."""
    body = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    keys = {k for k in body if k != "defaults"}
    for entry in body.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/experiment/"):
            keys |= _touched(entry.removeprefix("/experiment/"))
    return keys


def _grid(sweep: str) -> dict[str, list[str]]:
    """The sweeper params of ``conf/sweep/<sweep>.yaml``: each key's values, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _hydra_compose((f"sweep={sweep}",)).hydra.sweeper.params
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


def _first_job(sweep: str) -> list[str]:
    return [f"sweep={sweep}", *(f"{k}={v[0]}" for k, v in _grid(sweep).items())]


def _preset_of(sweep: str) -> str:
    return _hydra_compose((f"sweep={sweep}",)).hydra.runtime.choices.experiment


def _offline(overrides: list[str]) -> list[str]:
    """``model.pretrained=false`` where the composed model would fetch ImageNet weights online.

    The studies' presets default to ImageNet weights from timm's hub; tests run offline. Packaged
    weights (``model.weights=packaged``) load offline and stay on.
    """
    model = compose(overrides, UNUSED_DIR).model
    online = model.get("pretrained") and model.get("weights") != "packaged"
    return ["model.pretrained=false"] if online and "max_train_samples" not in model else []


def _quick(overrides: list[str]) -> list[str]:
    overrides = [*overrides, *_offline([*overrides, *QUICK])]
    model = compose([*overrides, *QUICK], UNUSED_DIR).model
    if "max_train_samples" not in model:
        return [*overrides, *QUICK]
    keys = {o.split("=", 1)[0] for o in QUICK_CLASSICAL}
    fewer_trees = ["+model.params.max_iter=10"] if model.estimator == "hist_gb" else []
    quick = [o for o in QUICK if o.split("=", 1)[0] not in keys]
    return [*overrides, *quick, *QUICK_CLASSICAL, *fewer_trees]


def _fingerprint(overrides: list[str]) -> str:
    """The composed run config, resolved, minus the list of overrides that asked for it."""
    resolved = OmegaConf.to_container(compose(overrides, UNUSED_DIR), resolve=True)
    resolved.pop("overrides")
    return json.dumps(resolved, sort_keys=True)


def _assert_ok(record: dict, run_dir: Path) -> None:
    assert record["status"] == "ok", record.get("error")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["val"] and saved["test"]


def test_the_five_studies_and_their_grids_are_found():
    assert {
        "melanoma_binary",
        "brain_mri",
        "ich_multilabel",
        "isic_multiclass",
        "fashion_benchmark",
        "fruits360",
        "small_medical",
    } <= set(EXPERIMENTS)
    assert {"brain_mri/balance", "fashion_benchmark/arms"} <= set(SWEEPS)
    assert all(_preset_of(s) == s.split("/")[0] for s in SWEEPS), "a grid lives under its preset"


def test_every_study_and_grid_has_its_documentation():
    index = (ROOT / "docs" / "studies.md").read_text()
    for preset in (p for p in EXPERIMENTS if "/" not in p):
        page = ROOT / "docs" / f"{preset}.md"
        assert page.is_file() and f"({preset}.md)" in index, preset
        grids = [s.split("/", 1)[1] for s in SWEEPS if s.startswith(f"{preset}/")]
        assert [g for g in grids if f"`{g}`" not in page.read_text()] == [], preset


# -- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_sets_only_fields_its_options_define(preset):
    assert _unknown_fields([f"experiment={preset}"]) == []


@cache
def _option_fields(group: str, option: str) -> frozenset[str]:
    return frozenset(_leaves(_hydra_compose((f"{group}={option}",))[group], group))


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_sets_only_fields_every_option_of_the_group_has(preset):
    """A preset chooses options; a field it sets stays meaningful whichever option is swapped in.

    ``model.head`` belongs in a preset-specific model option (``model/efficientnet_b0_mlp``),
    not in the preset: ``model=classical`` on the command line would inherit it.
    """
    body = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    body.pop("defaults", None)
    for path in _leaves(body):
        group = path.split(".", 1)[0]
        if group not in OPTION_GROUPS:
            continue  # train.yaml's own keys (task, seed, monitor, ...)
        lacking = [o for o in _options(group) if path not in _option_fields(group, o)]
        assert not lacking, f"{preset} sets {path}, which {group} options {lacking} do not have"


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_values_reach_the_composed_config(preset):
    """Presets come after train.yaml's own keys in the defaults list: their values win."""
    body = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    body.pop("defaults", None)
    cfg = _hydra_compose((f"experiment={preset}",))
    for path, value in _leaves(body).items():
        got = OmegaConf.select(cfg, path)
        got = OmegaConf.to_container(got) if isinstance(got, ListConfig) else got
        assert got == value, f"{preset} sets {path}={value!r}; the composed config has {got!r}"


@pytest.mark.parametrize("preset", EXPERIMENTS)
def test_preset_runs_end_to_end(preset, tmp_path):
    _assert_ok(run(_quick([f"experiment={preset}"]), tmp_path), tmp_path)


def test_presets_fetch_imagenet_weights_and_tests_switch_them_off():
    """The studies fine-tune ImageNet weights: presets ask for them; offline runs turn them off."""
    for preset in (
        "brain_mri",
        "ich_multilabel",
        "melanoma_binary",
        "isic_multiclass",
        "fruits360",
    ):
        assert compose([f"experiment={preset}"], UNUSED_DIR).model.pretrained is True, preset
        assert _offline([f"experiment={preset}"]) == ["model.pretrained=false"], preset
    small = compose(["experiment=small_medical"], UNUSED_DIR).model
    assert (small.pretrained, small.weights) == (True, "packaged")
    assert _offline(["experiment=small_medical"]) == []  # packaged weights load offline
    assert cfg_of("experiment=brain_mri", "balance=oversample").balance.oversample is True


def cfg_of(*overrides: str) -> DictConfig:
    return compose(list(overrides), UNUSED_DIR)


# -- grids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sweep", SWEEPS)
def test_grid_names_existing_options_and_fields(sweep):
    grid = _grid(sweep)
    assert "fold.index" in grid, "a study grid repeats every configuration over the folds"
    first = _first_job(sweep)
    cfg = _hydra_compose(tuple(first))
    touched = _touched(_preset_of(sweep))
    for key, values in grid.items():
        if (CONF / key).is_dir():  # a config group: every value is one of its options
            missing = [v for v in values if v not in _options(key)]
            assert not missing, f"{sweep}: no {key} option {missing}; options: {_options(key)}"
            if key in touched:  # the preset's values fit every option the grid swaps in
                for value in values:
                    assert _unknown_fields([*first, f"{key}={value}"]) == [], f"{key}={value}"
        else:
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (
                f"{sweep}: {key} is not a field of the composed config"
            )
        if key == "model.name":
            import timm

            assert [v for v in values if not timm.is_model(v)] == []


@pytest.mark.parametrize("sweep", SWEEPS)
def test_grid_first_job_runs_end_to_end(sweep, tmp_path):
    first = _first_job(sweep)
    preset = [f"experiment={_preset_of(sweep)}"]
    if _fingerprint(_quick(first)) == _fingerprint(_quick(preset)):
        return  # the preset itself: test_preset_runs_end_to_end trains exactly this run
    record = run(_quick(first), tmp_path)
    _assert_ok(record, tmp_path)
    assert record["overrides"]["fold.index"] == 0


# -- one grid as a user runs it: make sweep, then medsweep report ---------------------------------

GRID_ARGS = (
    "fold.n_folds=3 'fold.index=range(3)' balance=class_weights,oversample augmentation=none "
    "model=small_cnn "
    "data.image_size=16 trainer.max_epochs=1 +trainer.limit_train_batches=3 "
    "callbacks.progress_bar=null"
)


def test_brain_mri_balance_grid_runs_and_reports(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "WANDB_MODE": "disabled"}
    stamp = ROOT / ".venv" / ".stamp-install"  # -o: never (re)install from a test
    command = ["make", "--no-print-directory", "-o", str(stamp), "sweep", f"PY={sys.executable}"]
    result = subprocess.run(
        [*command, "SWEEP=brain_mri/balance", f"ARGS={GRID_ARGS} hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert sorted((r["overrides"]["balance"], r["fold"], r["n_folds"]) for r in records) == [
        (b, f, 3) for b in ("class_weights", "oversample") for f in range(3)
    ]

    pytest.importorskip("medsweep.report")  # the report command is a separate part
    script = Path(sys.executable).parent / "medsweep"
    medsweep = [str(script)] if script.exists() else [sys.executable, "-m", "medsweep.cli"]
    report = subprocess.run(
        [*medsweep, "report", str(sweep_dir), "--no-figures", "--no-wandb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    rows = [line for line in report.stdout.splitlines() if "±" in line]
    for balance in ("class_weights", "oversample"):
        assert any(f"balance={balance}" in r and "3/3" in r for r in rows), report.stdout
    assert "baseline" in report.stdout
