"""Every option of every config group composes and runs a fast_dev_run (new files are picked up)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose, conf_options, run, write_csv, write_image_folder, write_npz
from layouts import data_option_overrides

GROUPS = [
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "augmentation",
    "balance",
    "finetune",
    "fold",
    "trainer",
    "logger",
    "callbacks",
]
CASES = [(g, o) for g in GROUPS for o in conf_options(g)]

BASE = {
    "trainer": "debug",
    "model": "small_cnn",
    "data.image_size": "16",
    "data.batch_size": "16",
    "callbacks.progress_bar": "null",
}


def overrides_for(group: str, option: str, tmp_path) -> list[str]:
    """The fast base, the option under test, and what that option needs (local files, sizes)."""
    chosen = {**BASE, group: option}
    extra: list[str] = []
    if group == "data" and option == "npz":
        extra.append(f"data.source.path={write_npz(tmp_path / 'tiny.npz')}")
    if group == "data" and option == "imagefolder":
        extra.append(f"data.source.root={write_image_folder(tmp_path / 'folder')}")
    if group == "data" and option == "csv":
        extra.append(f"data.source.path={write_csv(tmp_path / 'csv')}")
    if group == "data" and option in ("imagefolder", "csv", "npz"):
        extra.append("data.num_workers=0")
    if group == "data":  # the public datasets' adapters, on tiny copies of their layouts
        extra += data_option_overrides(option, tmp_path)
    if group == "model":
        chosen["data.image_size"] = "32"  # deep backbones downsample 32x
        chosen["data.batch_size"] = "8"
    if group == "model":
        model = compose([f"model={option}"], tmp_path / "unused").model
        if model.get("pretrained") and model.get("weights") != "packaged":
            extra.append("model.pretrained=false")  # ImageNet weights need the hub (online)
    if group == "model" and option.startswith("classical"):
        # scikit-learn's OpenMP threads otherwise oversubscribe; a subset of 16 px images
        extra += ["model.n_threads=1", "model.max_train_samples=300"]
        chosen["data.image_size"] = "16"
        if option == "classical_hist_gb":
            extra.append("+model.params.max_iter=10")
    if group == "trainer" and option != "debug":
        extra += [
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
        ]
    if group == "callbacks":
        chosen.pop("callbacks.progress_bar")
    if (group, option) == ("data", "digits_multilabel"):
        chosen["loss"] = "bce"  # softmax cross-entropy does not fit multi-label data
    if (group, option) == ("balance", "pos_weight"):
        chosen.update({"data": "digits_binary", "loss": "bce"})
    return [f"{k}={v}" for k, v in chosen.items()] + extra


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_runs_fast_dev_run(group, option, tmp_path):
    overrides = overrides_for(group, option, tmp_path)
    if (group, option) == ("trainer", "gpu") and not torch.cuda.is_available():
        cfg = compose(overrides, tmp_path / "run")
        assert cfg.trainer.accelerator == "gpu" and "mixed" in cfg.trainer.precision
        pytest.skip("trainer=gpu composes; running it needs a GPU")
    if (group, option) == ("trainer", "ddp") and torch.cuda.device_count() < 2:
        cfg = compose(overrides, tmp_path / "run")
        assert cfg.trainer.strategy.startswith("ddp") and cfg.trainer.accelerator == "gpu"
        pytest.skip("trainer=ddp composes; running it needs several GPUs")
    record = run(overrides, tmp_path / "run")
    assert record["status"] == "ok"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "ok"
    assert set(saved["val"]) >= {"acc", "balanced_acc", "f1", "precision", "recall", "auroc"}
    assert 0.0 <= saved["val"]["acc"] <= 1.0
