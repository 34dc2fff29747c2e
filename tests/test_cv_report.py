"""`make cv` runs k folds of the offline default data; `medsweep report` prints mean ± std."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from helpers import ROOT


def test_make_cv_then_report(tmp_path):
    sweep = tmp_path / "cv"
    args = (
        f"trainer=debug model=small_cnn data.image_size=16 callbacks.progress_bar=null "
        f"hydra.sweep.dir={sweep}"
    )
    env = {**os.environ, "COLUMNS": "200"}
    made = subprocess.run(
        ["make", "cv", "FOLDS=5", f"ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(r["fold"] for r in records) == [0, 1, 2, 3, 4]
    assert all(r["status"] == "ok" and r["n_folds"] == 5 for r in records)
    folders = sorted(p.parent.name for p in sweep.glob("*/splits.json"))
    # each fold in a folder named by its overrides
    assert [
        next(part for part in f.split(",") if part.startswith("fold.index=")) for f in folders
    ] == [f"fold.index={i}" for i in range(5)]
    tests = {
        json.dumps(json.loads((sweep / f / "splits.json").read_text())["test"]) for f in folders
    }
    assert len(tests) == 1  # one held-out test set for every fold

    report = subprocess.run(
        [
            str(Path(ROOT) / ".venv" / "bin" / "medsweep"),
            "report",
            str(sweep),
            "--no-wandb",
            "--no-figures",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "±" in report.stdout and "5/5" in report.stdout
    summary = (sweep / "report" / "summary.csv").read_text()
    assert "val/acc" in summary or "val_acc" in summary
