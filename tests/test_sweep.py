"""Sweeps survive a failing job, re-runs skip finished ones, and all jobs share one split."""

from __future__ import annotations

import json

from helpers import run_cli, write_npz

TINY = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks.progress_bar=null",
    "fold=kfold",
    "fold.n_folds=3",
    "fold.index=0,1",
]


def _records(folder):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))}


def test_failing_job_does_not_stop_the_others_and_resume_reruns_only_it(tmp_path):
    good = write_npz(tmp_path / "good.npz")
    late = tmp_path / "late.npz"  # does not exist yet: its jobs fail
    sweep = tmp_path / "sweep"
    grid = [
        "train.py",
        "-m",
        "data=npz",
        f"data.source.path={good},{late}",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_cli(grid)
    assert first.returncode != 0  # the sweep reports its failures at the end
    records = _records(sweep)
    assert len(records) == 4
    failed = {k for k, r in records.items() if r["status"] == "failed"}
    ok = {k for k, r in records.items() if r["status"] == "ok"}
    assert len(failed) == 2 and all("late.npz" in records[k]["error"] for k in failed)
    assert len(ok) == 2
    stamps = {k: (sweep / k / "metrics.json").stat().st_mtime_ns for k in ok}
    fold0 = [k for k in ok if records[k]["fold"] == 0]
    assert json.loads((sweep / fold0[0] / "splits.json").read_text())["fold"] == 0

    write_npz(late)
    again = run_cli([*grid, "skip_done=true"])
    assert again.returncode == 0, again.stderr[-2000:]
    after = _records(sweep)
    assert all(r["status"] == "ok" for r in after.values())
    assert {k: (sweep / k / "metrics.json").stat().st_mtime_ns for k in ok} == stamps  # not re-run
    assert {k for k in failed if (sweep / k / "history.csv").exists()} == failed  # re-run, trained
    # the same data, fold config and seed give every job of a fold the same split
    by_fold: dict[int, set[str]] = {}  # good.npz and late.npz hold the same images
    for k, r in after.items():
        split = json.loads((sweep / k / "splits.json").read_text())
        by_fold.setdefault(r["fold"], set()).add(
            json.dumps([split["train"], split["val"], split["test"]])
        )
    assert all(len(v) == 1 for v in by_fold.values()) and len(by_fold) == 2
