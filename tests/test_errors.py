"""Wrong input fails before training, naming the key or file at fault and the valid choices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FAST, compose, run, run_cli, write_csv
from hydra.errors import ConfigCompositionException

from medsweep.data.preflight import DataCheckError


def _no_training_happened(run_dir):
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "history.csv").exists()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "failed"
    return saved["error"]


def test_unknown_loss_lists_choices(tmp_path):
    with pytest.raises(ConfigCompositionException) as info:
        compose([*FAST, "loss=nope"], tmp_path)
    message = str(info.value)
    assert "nope" in message and all(name in message for name in ("bce", "ce", "focal"))


def test_unknown_loss_on_command_line(tmp_path):
    result = run_cli(["train.py", "loss=nope", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    assert "loss/nope" in result.stderr and "focal" in result.stderr


def test_unknown_timm_model_names_close_matches(tmp_path):
    with pytest.raises(Exception, match="model.name='resnet_18'.*resnet18"):
        run([*FAST, "model=resnet18", "model.name=resnet_18"], tmp_path)
    assert "not a timm model" in _no_training_happened(tmp_path)


def test_csv_without_named_column(tmp_path):
    manifest = write_csv(tmp_path / "csv")
    with pytest.raises(KeyError) as info:
        run(
            [
                *FAST,
                "data=csv",
                f"data.source.path={manifest}",
                "data.source.label_column=diagnosis",
            ],
            tmp_path / "run",
        )
    message = str(info.value)
    assert "manifest.csv" in message and "'diagnosis'" in message and "label_column" in message
    assert "['image', 'label', 'patient']" in message
    _no_training_happened(tmp_path / "run")


def test_csv_with_missing_image_file(tmp_path):
    manifest = write_csv(tmp_path / "csv")
    (tmp_path / "csv" / "images" / "3.png").unlink()
    with pytest.raises(DataCheckError, match="3.png"):
        run([*FAST, "data=csv", f"data.source.path={manifest}"], tmp_path / "run")


def test_npz_without_train_images(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((4, 1)))
    with pytest.raises(KeyError) as info:
        run([*FAST, "data=npz", f"data.source.path={bad}"], tmp_path / "run")
    assert "bad.npz" in str(info.value) and "train_images" in str(info.value)
    _no_training_happened(tmp_path / "run")


def test_missing_npz_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        run([*FAST, "data=npz", f"data.source.path={tmp_path / 'nothere.npz'}"], tmp_path / "run")


def test_ce_on_multilabel_names_alternatives(tmp_path):
    with pytest.raises(Exception, match="loss=ce does not fit task=multilabel; choose loss=bce"):
        run([*FAST, "data=digits_multilabel", "loss=ce"], tmp_path)
    _no_training_happened(tmp_path)


def test_bad_task_value(tmp_path):
    with pytest.raises(ValueError, match="task='multi'.*binary"):
        run([*FAST, "task=multi"], tmp_path)


def test_pos_weight_with_ce_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="balance.pos_weight does not fit loss=.*CrossEntropyLoss"):
        run([*FAST, "data=digits_binary", "balance=pos_weight", "loss=ce"], tmp_path)
    _no_training_happened(tmp_path)
