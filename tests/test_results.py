"""The result schema, the per-sample predictions behind it, and runs that are never lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from helpers import CONF, FAST, ROOT, compose, run, run_cli, write_image_folder
from sklearn import metrics as skm

from medsweep.pipeline import build_datamodule, train
from medsweep.predictions import probability_matrix, read_predictions, target_array
from medsweep.results import (
    PREVIOUS_DIR,
    SCHEMA_VERSION,
    RunRecord,
    config_hash,
    job_dir_name,
    read_metrics,
)

EPOCHS = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=64",
    "callbacks.progress_bar=null",
    "+trainer.limit_train_batches=3",
]


def _predictions(tmp_path, record):
    frame = read_predictions(tmp_path / record["paths"]["predictions"])
    return {part: frame[frame["part"] == part] for part in ("val", "test")}


@pytest.mark.parametrize(
    ("data", "loss"),
    [("digits", "ce"), ("digits_binary", "bce"), ("digits_multilabel", "bce")],
)
def test_predictions_reproduce_the_recorded_metrics(data, loss, tmp_path):
    """Metrics recomputed by scikit-learn from predictions.parquet equal metrics.json's."""
    record = run([*EPOCHS, f"data={data}", f"loss={loss}", "trainer.max_epochs=2"], tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert saved["schema"] == SCHEMA_VERSION and saved["status"] == "ok"
    task, classes = saved["task"], saved["classes"]
    for part, frame in _predictions(tmp_path, record).items():
        assert frame["index"].tolist() == splits[part]  # every sample, in the split's order
        assert (frame["fold"] == 0).all()
        probs, y = probability_matrix(frame, classes), target_array(frame, task, classes)
        got = saved[part]
        if task == "multiclass":
            assert got["acc"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)), abs=1e-6)
            assert got["auroc"] == pytest.approx(
                skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-5
            )
        elif task == "binary":
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
            pos = probs[:, 1]
            assert got["acc"] == pytest.approx(skm.accuracy_score(y, pos > 0.5), abs=1e-6)
            assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, pos), abs=1e-5)
        else:
            assert got["auroc"] == pytest.approx(
                skm.roc_auc_score(y, probs, average="macro"), abs=1e-5
            )
            assert got["exact_match"] == pytest.approx(
                skm.accuracy_score(y, (probs > 0.5).astype(int)), abs=1e-6
            )


def test_classical_runs_write_the_same_predictions(tmp_path):
    record = run(["data.image_size=16", "model=classical", "model.n_threads=1"], tmp_path)
    frame = _predictions(tmp_path, record)["test"]
    probs = probability_matrix(frame, record["classes"])
    y = target_array(frame, "multiclass", record["classes"])
    assert record["test"]["acc"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert record["test"]["loss"] == pytest.approx(skm.log_loss(y, probs), abs=1e-6)


def test_prediction_ids_are_the_image_files(tmp_path):
    root = write_image_folder(tmp_path / "images")
    record = run(
        [*FAST, "data=imagefolder", f"data.source.root={root}", "fold.test_fraction=0.3"],
        tmp_path / "run",
    )
    frame = read_predictions(tmp_path / "run" / record["paths"]["predictions"])
    for _, row in frame.iterrows():
        path = ROOT / row["id"] if not os.path.isabs(row["id"]) else row["id"]
        assert os.path.isfile(path)
        assert f"digit{row['target']}" in str(row["id"]).replace("\\", "/").split("/")[-2]


def test_metrics_come_from_the_best_checkpoint_not_the_last_epoch(tmp_path):
    """With the monitor maximising val/loss the best epoch is an early one; metrics.json must
    hold that epoch's validation loss, not the last epoch's."""
    record = run(
        [*EPOCHS, "trainer.max_epochs=4", "monitor=val/loss", "monitor_mode=max"], tmp_path
    )
    history = pd.read_csv(tmp_path / "history.csv")
    best = int(history["val/loss"].idxmax())
    assert record["best_epoch"] == int(history.loc[best, "epoch"])
    assert record["best_epoch"] != record["epochs_run"] - 1  # the last epoch is not the best
    assert record["val"]["loss"] == pytest.approx(history.loc[best, "val/loss"], rel=1e-5)
    assert record["val"]["loss"] != pytest.approx(history["val/loss"].iloc[-1], rel=1e-3)


def test_training_augmentation_never_reaches_val_test_or_predictions(tmp_path):
    cfg = compose([*EPOCHS, "augmentation=aggressive", "trainer.max_epochs=1"], tmp_path)
    dm = build_datamodule(cfg)
    from medsweep.data.transforms import ImageTransform, to_channels

    augmented = dm.datasets["train"].transform
    # the same resize and normalization, with no augmentation op at all
    plain = ImageTransform(
        dm.image_size, augmented.mean.flatten().tolist(), augmented.std.flatten().tolist()
    )
    for part in ("val", "test"):
        dataset = dm.datasets[part]
        for i in range(4):
            first, second = dataset[i][0], dataset[i][0]
            assert torch_equal(first, second)  # no randomness
            image = to_channels(dataset.source.image(int(dataset.indices[i])), dm.channels)
            assert torch_equal(first, plain(image))
    train_set = dm.datasets["train"]
    assert not torch_equal(train_set[0][0], train_set[0][0])  # aggressive does change images


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))


def test_fold_assignment_follows_seed_and_fold_seed(tmp_path):
    def val_of(*overrides):
        cfg = compose([*FAST, "fold=kfold", "fold.n_folds=3", *overrides], tmp_path)
        return build_datamodule(cfg).splits.val.tolist()

    assert val_of("seed=1") == val_of("seed=1")
    assert val_of("seed=1") != val_of("seed=2")  # fold.seed follows the run's seed
    assert val_of("seed=1", "fold.seed=9") == val_of("seed=2", "fold.seed=9")
    assert val_of("fold.seed=9") != val_of("fold.seed=10")


def test_config_hash_ignores_fold_seed_and_paths_but_not_the_config(tmp_path):
    base = compose([*FAST, "fold=kfold"], tmp_path / "a")
    assert config_hash(base) == config_hash(compose([*FAST, "fold=kfold"], tmp_path / "b"))
    assert config_hash(base) == config_hash(
        compose([*FAST, "fold=kfold", "fold.index=2"], tmp_path)
    )
    assert config_hash(base) == config_hash(compose([*FAST, "fold=kfold", "seed=3"], tmp_path))
    assert config_hash(base) != config_hash(compose([*FAST, "fold=kfold", "loss=focal"], tmp_path))
    assert config_hash(base) != config_hash(
        compose([*FAST, "fold=kfold", "optimizer.lr=0.5"], tmp_path)
    )


def test_job_folder_names_are_stable_and_distinct():
    assert job_dir_name("loss=focal,fold.index=0") == "loss=focal,fold.index=0"
    assert job_dir_name("") == "default"
    a = job_dir_name("data.source.path=/a/b.npz,fold.index=0")
    b = job_dir_name("data.source.path=/a_b.npz,fold.index=0")
    assert "/" not in a and a != b  # replaced characters add a hash
    long = job_dir_name("x=" + "1" * 300)
    assert len(long) <= 96 and long != job_dir_name("x=" + "1" * 299)


def test_record_round_trip_and_running_status(tmp_path):
    record = RunRecord.start({"loss": "focal"}, seed=1, fold=2, n_folds=5, run_dir=tmp_path)
    record.write(tmp_path)
    saved = read_metrics(tmp_path)
    assert saved["status"] == "running" and saved["process"]["pid"] == os.getpid()
    assert saved["job"] is None  # not a sweep
    assert saved["config_key"] == "loss=focal" and saved["fold"] == 2
    record.finish("ok")
    record.write(tmp_path)
    assert read_metrics(tmp_path / "metrics.json")["status"] == "ok"
    with pytest.raises(ValueError, match="status='running'"):
        record.finish("running")


def test_a_killed_run_reads_as_failed_with_its_dead_pid(tmp_path):
    """A run killed with SIGKILL leaves status running; readers see its process is gone."""
    out = tmp_path / "run"
    args = [*EPOCHS, "trainer.max_epochs=50", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "history.csv").exists():  # training has started
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        raw = json.loads((out / "metrics.json").read_text())
        assert raw["status"] == "running" and raw["process"]["pid"] == proc.pid
        assert read_metrics(out)["status"] == "running"  # alive: still running
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = read_metrics(out)
    assert saved["status"] == "failed" and f"pid {proc.pid}" in saved["error"]
    assert json.loads((out / "metrics.json").read_text())["status"] == "running"  # file as left


TINY_SWEEP = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "callbacks.progress_bar=null",
]


def _ok_records(folder):
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(folder.glob("*/metrics.json"))
        if json.loads(p.read_text())["status"] == "ok"
    }


def test_a_changed_grid_rerun_never_overwrites_a_finished_run(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli(["train.py", "-m", "loss=ce,focal", *TINY_SWEEP, f"hydra.sweep.dir={sweep}"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = _ok_records(sweep)
    stamps = {k: (sweep / k / "metrics.json").stat().st_mtime_ns for k in before}
    assert len(before) == 2
    # the sweep's job numbers, in the grid's order (the report keeps this order)
    assert sorted((r["job"], r["overrides"]["loss"]) for r in before.values()) == [
        (0, "ce"),
        (1, "focal"),
    ]
    # job 0 is now loss=bce: with numbered folders it would land in loss=ce's folder
    again = run_cli(
        ["train.py", "-m", "loss=bce,ce", *TINY_SWEEP, f"hydra.sweep.dir={sweep}", "skip_done=true"]
    )
    assert again.returncode == 0, again.stderr[-2000:]
    after = _ok_records(sweep)
    assert len(after) == 3
    for key, record in before.items():  # the finished runs are untouched
        assert after[key] == record
        assert (sweep / key / "metrics.json").stat().st_mtime_ns == stamps[key]
    losses = sorted(r["overrides"]["loss"] for r in after.values())
    assert losses == ["bce", "ce", "focal"]


def test_rerunning_a_folder_keeps_the_finished_run(tmp_path):
    ok = run(FAST, tmp_path)
    with pytest.raises(Exception, match="Invalid learning rate"):
        train(compose([*FAST, "optimizer.lr=-1"], tmp_path))
    assert read_metrics(tmp_path)["status"] == "failed"
    kept = list((tmp_path / PREVIOUS_DIR).glob("*/metrics.json"))
    assert len(kept) == 1
    assert json.loads(kept[0].read_text())["val"] == ok["val"]
    assert (kept[0].parent / "predictions.parquet").is_file()


def test_skip_done_reruns_a_run_whose_config_changed(tmp_path):
    """An edited option file (a changed default) changes the hash: the run is not skipped."""
    import shutil

    from medsweep.pipeline import compose_config

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    overrides = [*FAST, "skip_done=true", f"paths.output_dir={tmp_path / 'run'}"]
    first = train(compose_config(overrides, conf))
    assert train(compose_config(overrides, conf)).get("skipped") is True
    adam = conf / "optimizer" / "adam.yaml"
    adam.write_text(adam.read_text().replace("lr: 0.001", "lr: 0.002"))
    second = train(compose_config(overrides, conf))
    assert not second.get("skipped") and second["config_hash"] != first["config_hash"]
    assert len(list((tmp_path / "run" / PREVIOUS_DIR).glob("*/metrics.json"))) == 1


def test_report_refuses_runs_of_different_tasks_unless_allowed(tmp_path):
    from medsweep.report import build_report
    from medsweep.report.errors import ReportError

    run([*FAST, "data=digits"], tmp_path / "runs" / "a")
    run([*FAST, "data=digits_binary"], tmp_path / "runs" / "b")
    with pytest.raises(ReportError, match="tasks: binary.*multiclass.*--allow-mixed"):
        build_report(tmp_path / "runs", figures=False, wandb=False)
    report = build_report(tmp_path / "runs", figures=False, wandb=False, allow_mixed=True)
    assert len(report.runs) == 2
