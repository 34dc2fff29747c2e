"""An evaluation of a run that logged to W&B (offline) lands in that same W&B run: its tables,
figures and test metrics, decoded from the offline ``.wandb`` files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from helpers import read_wandb_records, run, wandb_logged_values
from sklearn import metrics as skm

from medsweep.evaluation import EvalSettings, evaluate_run, load_run

TRAIN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "data.image_size=16",
    "data.batch_size=64",
    "model=small_cnn",
    "callbacks.progress_bar=null",
    "data=digits_binary",
    "loss=bce",
    "logger=wandb",
]


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline W&B, no API key, every W&B file under tmp."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))


def _run_id(path: Path) -> str:
    records = read_wandb_records(path)
    return next(r.run for r in records if r.WhichOneof("record_type") == "run").run_id


def _summary(path: Path) -> dict:
    out = {}
    for record in read_wandb_records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def _logged_table(files: Path, history: dict, name: str) -> pd.DataFrame:
    """The ``eval/<name>`` table of the run, read from the file W&B stored it in."""
    assert history[f"eval/{name}/_type"] == ["table-file"], name
    table = json.loads((files / history[f"eval/{name}/path"][0]).read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluation_logs_to_the_training_run(tmp_path: Path, offline_wandb: None) -> None:
    run_dir = tmp_path / "run"
    record = run(TRAIN, run_dir)
    assert record["status"] == "ok"
    entry = record["wandb"]
    assert entry["mode"] == "offline" and entry["id"]
    train_file = Path(entry["dir"]) / f"run-{entry['id']}.wandb"
    wandb_logged_values(train_file)  # waits until training's log is complete
    assert _run_id(train_file) == entry["id"]
    before = set((run_dir / "wandb").rglob("*.wandb"))

    settings = EvalSettings(n_boot=40, tta=False, cam=False, thumbnails=False, wandb=True)
    ev = evaluate_run(run_dir, settings)

    written = sorted(set((run_dir / "wandb").rglob("*.wandb")) - before)
    assert len(written) == 1, written  # one W&B run opened by the evaluation
    eval_file = written[0]
    history = wandb_logged_values(eval_file)
    # the same W&B run as training: its id, project, group and job type; its folder beside
    # training's under the same wandb/ root, where `wandb sync <run>/wandb/offline-run-*` finds it
    assert eval_file.name == train_file.name
    assert eval_file.parent.parent == train_file.parent.parent
    assert _run_id(eval_file) == entry["id"]
    run_record = next(
        r.run for r in read_wandb_records(eval_file) if r.WhichOneof("record_type") == "run"
    )
    assert run_record.project == entry["project"]
    assert (run_record.run_group, run_record.job_type) == (entry["group"], entry["job_type"])

    # test metrics in the run summary equal eval/summary.json's and scikit-learn's
    stored = json.loads((ev.out_dir / "summary.json").read_text())
    summary = _summary(eval_file)
    for name, values in stored["test"].items():
        logged = summary[f"eval/test/{name}"]
        if values["estimate"] is None or math.isnan(values["estimate"]):
            continue
        assert logged == pytest.approx(values["estimate"]), name
    data = load_run(run_dir)
    expected_auroc = skm.roc_auc_score(data.test.targets, data.test.probs[:, 1])
    assert summary["eval/test/auroc"] == pytest.approx(expected_auroc)
    assert summary["eval/test/acc"] == pytest.approx(
        skm.accuracy_score(data.test.targets, data.test.probs[:, 1] >= 0.5)
    )

    # the metrics table with its intervals, as the evaluation wrote it in tables/metrics_ci.csv
    files = eval_file.parent / "files"
    logged = _logged_table(files, history, "metrics_ci").set_index("metric")
    csv = pd.read_csv(ev.out_dir / "tables" / "metrics_ci.csv").set_index("metric")
    assert list(logged.index) == list(csv.index)
    for column in ("estimate", "ci_low", "ci_high"):
        assert logged[column].astype(float).tolist() == pytest.approx(
            csv[column].tolist(), nan_ok=True
        )
    assert logged.loc["auroc", "estimate"] == pytest.approx(expected_auroc)
    # the thresholds table holds the chosen threshold, the calibration table the temperature
    thresholds = _logged_table(files, history, "thresholds")
    chosen = json.loads((ev.out_dir / "thresholds.json").read_text())["thresholds"]
    after = thresholds[thresholds["decision"] == "after"].set_index("class")["threshold"]
    assert after.to_dict() == pytest.approx(chosen)
    calibration = _logged_table(files, history, "calibration")
    temperature = json.loads((ev.out_dir / "calibration.json").read_text())["temperature"]
    assert calibration["temperature"].astype(float).tolist() == pytest.approx(
        [temperature] * len(calibration)
    )
    assert stored["temperature"] == pytest.approx(temperature)

    # every figure of the evaluation, byte for byte, as a W&B image of the run
    figures = {_sha(ev.out_dir / p) for k, p in stored["files"].items() if k.startswith("fig_")}
    assert len(figures) >= 3  # ROC/PR, confusion, reliability
    images = {
        _sha(files / paths[0])
        for key, paths in history.items()
        if key.endswith("/path") and history.get(key[: -len("path")] + "_type") == ["image-file"]
    }
    assert images == figures
