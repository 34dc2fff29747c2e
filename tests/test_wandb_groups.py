"""W&B runs of a sweep, decoded from their offline files: group, job type, name, config, summary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from helpers import CONF, read_wandb_records, run_cli, wandb_logged_values

from medsweep.tracking import fit, flatten, report_run_settings, sweep_job_type

GRID = [
    "train.py",
    "-m",
    "logger=wandb",
    "loss=focal",
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks.progress_bar=null",
    "fold=kfold",
    "fold.n_folds=2",
    "fold.index=0,1",
]
# the configuration: the overrides but the fold index and the logger (which does not change a
# result), sorted (written out by hand)
KEY = (
    "callbacks.progress_bar=null,data.batch_size=16,data.image_size=16,fold=kfold,fold.n_folds=2,"
    "loss=focal,model=small_cnn,trainer.limit_train_batches=2,trainer.max_epochs=1"
)


def shortened(text: str, limit: int) -> str:
    """W&B caps groups and names at 128 characters: a prefix, ``~`` and 8 hex of the text's sha256."""
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "~" + hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline W&B with every file under tmp."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))


def run_record(path: Path):
    """The run record (identity and initial config) and every config update and summary value."""
    wandb_logged_values(path)  # waits for the exit record
    records = read_wandb_records(path)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config, summary = {}, {}
    items = list(run.config.update)
    for r in records:
        if r.WhichOneof("record_type") == "config":
            items += list(r.config.update)
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    for item in items:
        config[item.key] = json.loads(item.value_json)
    return run, config, summary


def test_sweep_runs_are_grouped_by_configuration(tmp_path: Path, offline_wandb: None) -> None:
    sweep_dir = tmp_path / "focal_cv"
    result = run_cli([*GRID, f"hydra.sweep.dir={sweep_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    assert sorted(r["fold"] for r in records) == [0, 1]
    focal = yaml.safe_load((CONF / "loss" / "focal.yaml").read_text())
    adam = yaml.safe_load((CONF / "optimizer" / "adam.yaml").read_text())
    for record in records:
        assert record["status"] == "ok", record["error"]
        files = list(Path(record["wandb"]["dir"]).glob("run-*.wandb"))
        assert len(files) == 1
        run, config, summary = run_record(files[0])
        fold = record["fold"]
        assert len(KEY) > 128  # this key is cut to W&B's limit, and its fold kept in the name
        assert run.run_group == shortened(KEY, 128)
        assert run.job_type == "focal_cv"  # the sweep's folder
        assert run.display_name == shortened(KEY, 128 - 7) + f"/fold-{fold}"
        assert record["wandb"]["group"] == run.run_group
        assert record["wandb"]["job_type"] == "focal_cv"
        # the resolved config, flattened, with the overrides and the configuration key
        assert config["loss._target_"] == focal["_target_"]
        assert config["loss.gamma"] == focal["gamma"]
        assert config["optimizer.lr"] == adam["lr"]
        assert config["fold.index"] == fold and config["fold.n_folds"] == 2
        assert config["config_key"] == KEY
        assert config["config_hash"] == record["config_hash"]
        assert "fold.index=" + str(fold) in config["overrides"]
        assert "loss=focal" in config["overrides"]
        # the best checkpoint's metrics, as metrics.json has them
        for part in ("val", "test"):
            for name, value in record[part].items():
                assert summary[f"{part}/{name}"] == pytest.approx(value), (part, name)
            assert summary[f"{part}/confusion"] == record["confusion"][part]
        # confusion matrix and curves as W&B charts: logged tables in the run's media
        history = wandb_logged_values(files[0])
        for chart in ("confusion_matrix", "roc", "pr"):
            assert history[f"val/{chart}_table/_type"] == ["table-file"]
        media = files[0].parent / "files" / "media" / "table"
        table = json.loads(next((media / "val").glob("confusion_matrix_table_*.json")).read_text())
        counts = {(a, p): n for a, p, n in table["data"]}
        classes = record["classes"]
        assert [
            [counts[(classes[i], classes[j])] for j in range(len(classes))]
            for i in range(len(classes))
        ] == record["confusion"]["val"]
        assert sorted(p.name.split("_table")[0] for p in (media / "test").glob("*.json")) == [
            "confusion_matrix",
            "pr",
            "roc",
        ]


def test_flatten_fit_and_sweep_names() -> None:
    assert flatten({"loss": {"_target_": "x", "gamma": 2}, "seed": 1, "tags": [1, 2]}) == {
        "loss._target_": "x",
        "loss.gamma": 2,
        "seed": 1,
        "tags": [1, 2],
    }
    assert fit("abc", 3) == "abc"
    long = "k=" + "v" * 200
    short = fit(long, 64)
    assert len(short) == 64 and short.startswith("k=vvv") and short[55] == "~"
    assert fit(long + "x", 64) != short  # another text, another name
    assert sweep_job_type("outputs/multirun/2026-01-02/12-30-00") == "2026-01-02/12-30-00"
    assert sweep_job_type("/data/sweeps/isic_cv") == "isic_cv"


def test_report_run_joins_the_sweep() -> None:
    records = [
        {"wandb": {"project": "p", "job_type": "2026-01-02/12-30-00"}},
        {"wandb": {"project": "p", "job_type": "2026-01-02/12-30-00"}},
        {"wandb": None},
    ]
    assert report_run_settings(records, "outputs/multirun/2026-01-02/12-30-00") == {
        "project": "p",
        "job_type": "2026-01-02/12-30-00",
        "group": "report",
        "name": "report",
    }
    assert report_run_settings([], "x/multirun/a/b")["job_type"] == "a/b"
