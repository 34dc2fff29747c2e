"""DeferredCheckpointIO copies a checkpoint into the buffers of the snapshots it no longer
needs: the same values (and files) as fresh copies, without new memory at every save."""

from __future__ import annotations

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
