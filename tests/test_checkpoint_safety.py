"""Checkpoints are read weights-only: a crafted one runs no code and stops the run naming the file."""

from __future__ import annotations

import contextlib
import csv
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run

from medsweep.checkpoints import load_checkpoint

RUN = [
    "model=small_cnn",
    "data.image_size=16",
    "data.batch_size=64",
    "+trainer.limit_train_batches=2",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
]


class Payload:
    """Unpickling this opens (creates) ``path``: what a crafted checkpoint could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payload_is_live(checkpoint: Path, tmp_path: Path) -> None:
    """Unpickling a copy with weights_only=False does create its file: the payload is real."""
    probe = tmp_path / "probe"
    probe.mkdir()
    marker = Path(Payload(tmp_path / "x").path)
    assert not marker.exists()
    # a plain pickle runs it, then fails torch's format check
    with contextlib.suppress(RuntimeError):
        torch.load(shutil.copy(checkpoint, probe / "copy.ckpt"), weights_only=False)
    assert marker.exists()
    marker.unlink()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real run of two epochs (its checkpoints, history.csv, metrics.json)."""
    folder = tmp_path_factory.mktemp("trained")
    run([*RUN, "trainer.max_epochs=2"], folder)
    return folder


def _crafted(kind: str, path: Path, marker: Path, trained: Path) -> Path:
    payload = Payload(marker)
    if kind == "pickle":  # a plain pickle, no torch format at all
        with path.open("wb") as f:
            pickle.dump({"state_dict": {}, "epoch": 0, "x": payload}, f, protocol=2)
    elif kind == "torch":
        torch.save({"state_dict": {}, "epoch": 0, "x": payload}, path)
    else:  # a real checkpoint of ours with one object slipped into its hyperparameters
        checkpoint = load_checkpoint(trained / "checkpoints" / "last.ckpt")
        checkpoint["hyper_parameters"]["task"] = payload
        torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("kind", ["pickle", "torch", "real"])
def test_resume_from_a_crafted_checkpoint_runs_nothing_and_names_it(tmp_path, trained, kind):
    marker = tmp_path / "x"
    crafted = _crafted(kind, tmp_path / "crafted.ckpt", marker, trained)
    _payload_is_live(crafted, tmp_path)
    with pytest.raises(ValueError, match="is not a weights-only checkpoint") as info:
        run([*RUN, f"resume={crafted}"], tmp_path / "run")
    assert f"resume={crafted}" in str(info.value)
    assert not marker.exists()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and str(crafted) in saved["error"]


def test_a_crafted_best_checkpoint_beside_last_is_refused(tmp_path, trained):
    folder = tmp_path / "given"
    shutil.copytree(trained / "checkpoints", folder)
    marker = tmp_path / "x"
    torch.save({"state_dict": {}, "epoch": 0, "x": Payload(marker)}, folder / "best.ckpt")
    _payload_is_live(folder / "best.ckpt", tmp_path)
    # the run has nothing left to train: it goes straight to the best checkpoint it was handed
    with pytest.raises(ValueError, match=r"best\.ckpt is not a weights-only checkpoint"):
        run([*RUN, "trainer.max_epochs=2", f"resume={folder / 'last.ckpt'}"], tmp_path / "run")
    assert not marker.exists()


def test_resume_from_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match=f"resume={missing}"):
        run([*RUN, f"resume={missing}"], tmp_path / "run")


def test_our_checkpoints_load_weights_only_with_their_callback_states(trained):
    with (trained / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = torch.load(trained / "checkpoints" / name, weights_only=True)
        assert {"state_dict", "loops", "callbacks", "hyper_parameters"} <= checkpoint.keys()
        states = checkpoint["callbacks"]
        rows = states["History"]["rows"]
        # each checkpoint holds the rows up to its own epoch, as history.csv has them
        assert [r["epoch"] for r in rows] == list(range(checkpoint["epoch"] + 1))
        for row, written in zip(rows, history):
            assert row.keys() == {k for k, v in written.items() if v != ""}
            for key, value in row.items():
                assert value == pytest.approx(float(written[key]))
        assert len(states["Timing"]["epoch_s"]) == checkpoint["epoch"] + 1
        assert states["Timing"]["train_images"] == 64 * 2 * (checkpoint["epoch"] + 1)


def test_no_source_file_unpickles_with_weights_only_false():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if "weights_only=False" in path.read_text()
    ]
    assert offenders == []
