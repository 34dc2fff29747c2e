"""One run on two processes (DDP on CPU): one set of files, with every sample's prediction."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import run_cli
from sklearn import metrics as skm

from medsweep.predictions import probability_matrix, target_array


def test_ddp_run_writes_every_samples_prediction_once(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        [
            "train.py",
            "model=small_cnn",
            "data.image_size=16",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.deterministic=false",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={out}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    frame = pd.read_parquet(out / record["paths"]["predictions"])
    for part in ("val", "test"):
        rows = frame[frame["part"] == part]
        # each rank saw half of the samples; gathered back, in the split's order, no padding
        assert rows["index"].tolist() == splits[part]
        probs = probability_matrix(rows, record["classes"])
        y = target_array(rows, "multiclass", record["classes"])
        assert record[part]["acc"] == pytest.approx(
            skm.accuracy_score(y, probs.argmax(1)), abs=1e-6
        )
