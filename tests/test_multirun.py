"""A grid launched from the command line, as a user types it."""

from __future__ import annotations

import json

from helpers import run_cli

GRID = [
    "train.py",
    "-m",
    "loss=focal,bce",
    "optimizer=adam,sgd",
    "model=small_cnn",
    "data.image_size=16",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "callbacks.progress_bar=null",
]


def test_two_by_two_grid_writes_four_ok_results(tmp_path):
    result = run_cli([*GRID, f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/metrics.json"))]
    assert len(records) == 4
    assert all(r["status"] == "ok" for r in records)
    keys = sorted(r["config_key"] for r in records)
    assert keys == [
        f"callbacks.progress_bar=null,data.image_size=16,loss={loss},model=small_cnn,optimizer={opt},"
        "trainer.limit_train_batches=3,trainer.max_epochs=1"
        for loss in ("bce", "focal")
        for opt in ("adam", "sgd")
    ]
    assert all(r["overrides"]["data.image_size"] == 16 for r in records)
