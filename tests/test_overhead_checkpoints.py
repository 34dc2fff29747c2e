"""DeferredCheckpointIO copies a checkpoint into the buffers of the snapshots it no longer
needs: the same values (and files) as fresh copies, without new memory at every save."""

from __future__ import annotations

from collections import OrderedDict

import torch
from lightning.fabric.utilities.apply_func import apply_to_collection

from medsweep.checkpoint_io import DeferredCheckpointIO


def _checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> dict:
    return {
        "epoch": epoch,
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "callbacks": {"History": {"rows": [{"epoch": epoch}]}},
    }


def _tensor_ids(checkpoint: dict) -> set[int]:
    ids: set[int] = set()
    apply_to_collection(checkpoint, torch.Tensor, lambda t: ids.add(id(t)))
    return ids


def _train_step(model, optimizer) -> None:
    loss = model(torch.randn(8, 4)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_a_replaced_snapshot_lends_its_buffers_and_the_files_hold_the_live_values(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2)
    )
    optimizer = torch.optim.Adam(model.parameters())
    _train_step(model, optimizer)
    io = DeferredCheckpointIO(interval_s=3600)
    path = tmp_path / "best.ckpt"
    io.save_checkpoint(_checkpoint(model, optimizer, 0), path)
    first = _tensor_ids(io.pending[str(path)])
    _train_step(model, optimizer)
    io.save_checkpoint(_checkpoint(model, optimizer, 1), path)
    held = io.pending[str(path)]
    assert _tensor_ids(held) == first  # the same buffers, refilled
    for key, value in model.state_dict().items():
        assert torch.equal(held["state_dict"][key], value)
        assert held["state_dict"][key].data_ptr() != value.data_ptr()  # a copy, not the live one
    _train_step(model, optimizer)  # the live model moves on; the held copy does not
    assert not torch.equal(held["state_dict"]["0.weight"], model.state_dict()["0.weight"])
    io.teardown()
    assert not io._spare  # buffers are freed when the stage ends
    io.wait()  # the files are written by a thread
    loaded = torch.load(path, weights_only=False)
    assert loaded["epoch"] == 1 and loaded["callbacks"]["History"]["rows"] == [{"epoch": 1}]
    for key, value in held["state_dict"].items():
        assert torch.equal(loaded["state_dict"][key], value)
    state = loaded["optimizer_states"][0]["state"]
    assert set(state) == set(optimizer.state_dict()["state"])


def test_shared_and_odd_tensors_are_copied_once_each(tmp_path):
    shared = torch.arange(6.0).view(2, 3)
    checkpoint = {"a": shared, "b": shared, "t": shared.t(), "scalar": torch.tensor(3)}
    io = DeferredCheckpointIO(interval_s=3600)
    io.save_checkpoint(checkpoint, tmp_path / "x.ckpt")
    io.save_checkpoint(checkpoint, tmp_path / "x.ckpt")  # now from the first one's buffers
    held = io.pending[str(tmp_path / "x.ckpt")]
    assert held["a"] is held["b"] and torch.equal(held["a"], shared)
    assert torch.equal(held["t"], shared.t()) and held["t"].stride() == shared.t().stride()
    assert held["scalar"].item() == 3
    shared.add_(1)
    assert held["a"][0, 0].item() == 0.0


def test_best_checkpoint_leaves_out_the_training_state_and_last_keeps_it(tmp_path):
    import os

    import pytest
    from helpers import run

    from medsweep.checkpoint_io import BestCheckpoint
    from medsweep.checkpoints import load_checkpoint

    overrides = [
        "data=digits",
        "model=small_cnn",
        "data.image_size=16",
        "data.batch_size=16",
        "callbacks.progress_bar=null",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=3",
        "scheduler=cosine",
    ]
    record = run(overrides, tmp_path)
    folder = tmp_path / "checkpoints"
    best, last = load_checkpoint(folder / "best.ckpt"), load_checkpoint(folder / "last.ckpt")
    assert "optimizer_states" not in best and "lr_schedulers" not in best
    assert len(last["optimizer_states"]) == 1 and len(last["lr_schedulers"]) == 1
    assert best["state_dict"].keys() == last["state_dict"].keys()
    # the best epoch's own record, with the callbacks' states (the selection is resumable)
    assert best["epoch"] == record["best_epoch"]
    state = next(v for k, v in best["callbacks"].items() if k.startswith("BestCheckpoint"))
    assert float(state["best_model_score"]) == pytest.approx(record["val"]["auroc"], abs=1e-6)
    # Adam keeps two moments per weight: the best file is about a third of the last
    assert os.path.getsize(folder / "best.ckpt") < 0.5 * os.path.getsize(folder / "last.ckpt")
    with pytest.raises(ValueError, match="last_checkpoint"):
        BestCheckpoint(dirpath=tmp_path, save_last=True)


def _gated_writes(monkeypatch, fail: bool = False):
    """Make the writer thread wait for ``gate`` (or fail) before each file it writes."""
    import threading

    import medsweep.checkpoint_io as checkpoint_io

    gate, started, write = threading.Event(), threading.Event(), checkpoint_io.write_checkpoint

    def gated(checkpoint, path):
        started.set()
        assert gate.wait(60)
        if fail:
            raise OSError(f"no space left for {path}")
        write(checkpoint, path)

    monkeypatch.setattr(checkpoint_io, "write_checkpoint", gated)
    return gate, started


def test_files_due_at_a_stage_end_are_written_by_a_thread_and_read_from_memory_meanwhile(
    tmp_path, monkeypatch
):
    gate, started = _gated_writes(monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    optimizer = torch.optim.Adam(model.parameters())
    _train_step(model, optimizer)
    io = DeferredCheckpointIO(interval_s=3600)
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(model, optimizer, 4), best)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model, optimizer)
    io.save_checkpoint(_checkpoint(model, optimizer, 5), last)
    io.teardown()  # the end of fit: returns with the files still to write
    assert started.wait(60) and not best.exists() and not last.exists()
    assert io.held(best)["epoch"] == 4 and io.held(tmp_path / "other.ckpt") is None
    held = io.load_checkpoint(best)  # the evaluation's load: the copy in memory
    assert held["epoch"] == 4 and held["state_dict"].keys() == weights.keys()
    assert all(torch.equal(held["state_dict"][k], v) for k, v in weights.items())
    held["state_dict"].clear()  # the caller's copy: what the file gets is unchanged
    held["epoch"] = -1
    io.teardown()  # a later stage with nothing pending leaves the thread writing
    assert not best.exists()
    gate.set()
    io.wait()
    on_disk = torch.load(best, weights_only=True)
    assert on_disk["epoch"] == 4
    assert all(torch.equal(on_disk["state_dict"][k], v) for k, v in weights.items())
    assert torch.load(last, weights_only=True)["epoch"] == 5 and io.writes == 2
    assert io.load_checkpoint(best)["epoch"] == 4  # from disk now


def test_a_later_write_waits_for_the_thread_and_its_error_reaches_wait(tmp_path, monkeypatch):
    import threading

    import pytest

    gate, started = _gated_writes(monkeypatch)
    path = tmp_path / "last.ckpt"
    io = DeferredCheckpointIO(interval_s=3600)
    io.save_checkpoint({"epoch": 1}, path)
    io.teardown()
    assert started.wait(60)
    io.save_checkpoint({"epoch": 2}, path)
    threading.Timer(0.3, gate.set).start()
    io.flush()  # waits for the thread's epoch 1 before writing epoch 2 over it
    assert torch.load(path, weights_only=True) == {"epoch": 2}

    monkeypatch.undo()
    gate, started = _gated_writes(monkeypatch, fail=True)
    io.save_checkpoint({"epoch": 3}, path)
    io.teardown()
    gate.set()
    with pytest.raises(RuntimeError, match="writing the checkpoints failed: no space left"):
        io.wait()
    io.wait()  # reported once
    assert torch.load(path, weights_only=True) == {"epoch": 2}  # the earlier file is whole


def test_a_run_evaluating_from_memory_reports_what_the_files_hold(tmp_path):
    """The evaluation after the fit reads the best weights from memory while a thread writes the
    files: the same metrics and predictions as a run that writes them first, the best file holds
    the weights the reported metrics were computed with, and the test AUROC is scikit-learn's
    on the predictions file."""
    import pandas as pd
    import pytest
    from helpers import run
    from omegaconf import OmegaConf
    from sklearn.metrics import roc_auc_score

    from medsweep.checkpoints import load_checkpoint

    overrides = [
        "data=digits_binary",
        "model=small_cnn",
        "data.image_size=16",
        "data.batch_size=32",
        "callbacks.progress_bar=null",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=4",
    ]
    threaded = run(overrides, tmp_path / "threaded")
    at_once = run([*overrides, "trainer.plugins.0.background=false"], tmp_path / "at_once")
    folders = [tmp_path / "threaded", tmp_path / "at_once"]
    config = OmegaConf.load(folders[0] / threaded["paths"]["config"])
    assert config.trainer.plugins[0].background is True
    assert threaded["status"] == at_once["status"] == "ok"
    assert threaded["best_epoch"] == at_once["best_epoch"]
    for part in ("val", "test"):
        assert threaded[part] == at_once[part]
    preds = [
        pd.read_parquet(f / r["paths"]["predictions"]) for f, r in zip(folders, [threaded, at_once])
    ]
    pd.testing.assert_frame_equal(preds[0], preds[1])
    best = [load_checkpoint(f / "checkpoints" / "best.ckpt") for f in folders]
    assert best[0]["epoch"] == threaded["best_epoch"]
    assert best[0]["state_dict"].keys() == best[1]["state_dict"].keys()
    for key, value in best[0]["state_dict"].items():
        assert torch.equal(value, best[1]["state_dict"][key])
    assert (folders[0] / threaded["paths"]["last_checkpoint"]).is_file()
    test = preds[0][preds[0]["part"] == "test"]
    assert len(test) and test["target"].nunique() == 2
    auroc = roc_auc_score(test["target"] == 1, test[f"prob/{threaded['classes'][1]}"])
    assert threaded["test"]["auroc"] == pytest.approx(auroc, abs=1e-6)


class _PausesPickling:
    """Pickles as an empty OrderedDict (a type weights-only loading takes), after waiting for
    ``gate``: holds the writer thread inside ``torch.save``."""

    started = gate = None

    def __deepcopy__(self, memo):  # the in-memory copy at save time does not pickle
        return type(self)()

    def __reduce__(self):
        type(self).started.set()
        assert type(self).gate.wait(60)
        return (OrderedDict, ())


def test_loader_workers_fork_while_the_thread_is_inside_torch_save(tmp_path):
    """The evaluation after a fit may start loader workers (fork) while the thread writes: the
    workers load their batches, and the file is whole once the write goes on."""
    import threading

    from torch.utils.data import DataLoader, TensorDataset

    _PausesPickling.started, _PausesPickling.gate = threading.Event(), threading.Event()
    io = DeferredCheckpointIO(interval_s=3600)
    path = tmp_path / "best.ckpt"
    weights = torch.randn(256, 256)
    io.save_checkpoint({"epoch": 3, "weights": weights, "paused": _PausesPickling()}, path)
    io.teardown()
    assert _PausesPickling.started.wait(60) and io._writer.is_alive()
    loader = DataLoader(
        TensorDataset(torch.arange(48.0)),
        batch_size=8,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=60,
    )
    assert sorted(float(x) for (batch,) in loader for x in batch) == list(range(48))
    assert io._writer.is_alive()  # the workers started and finished during the write
    _PausesPickling.gate.set()
    io.wait()
    on_disk = torch.load(path, weights_only=True)
    assert on_disk["epoch"] == 3 and on_disk["paused"] == OrderedDict()
    assert torch.equal(on_disk["weights"], weights)
