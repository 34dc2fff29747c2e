"""Mixed precision, channels-last and torch.compile through the real pipeline, on the CPU.

A GPU runs ``trainer=gpu`` (16-mixed, channels-last); on this CPU the same code paths run with
bf16 autocast, NHWC tensors and TorchDynamo with its eager backend.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import FAST, compose, run

from medsweep.config_check import ConfigError, check_config

# two real epochs of two batches (fast_dev_run writes no best checkpoint)
SHORT = [o for o in FAST if o != "trainer=debug"] + [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "data.channels=3",  # with one channel NCHW and NHWC are the same layout
]


def probed(tmp_path, name: str, extra: list[str]) -> tuple[dict, dict]:
    probe = tmp_path / f"{name}.json"
    record = run(
        [
            *SHORT,
            *extra,
            "+callbacks.probe._target_=probes.NetworkProbe",
            f"+callbacks.probe.path={probe}",
        ],
        tmp_path / name,
    )
    return record, json.loads(probe.read_text())


def val_probs(record: dict) -> torch.Tensor:
    frame = pd.read_parquet(f"{record['paths']['run_dir']}/predictions.parquet")
    frame = frame[frame.part == "val"]
    return torch.tensor(frame.filter(like="prob/").to_numpy())


def test_bf16_mixed_runs_the_network_in_bf16_and_keeps_float32_weights(tmp_path):
    plain, plain_probe = probed(tmp_path, "fp32", [])
    mixed, probe = probed(tmp_path, "bf16", ["trainer.precision=bf16-mixed"])
    assert plain_probe["outputs"] == ["torch.float32"]
    assert probe["outputs"] == ["torch.bfloat16"]  # autocast took effect in training
    assert probe["param_dtypes"] == ["torch.float32"]  # mixed, not pure bf16: fp32 master weights
    assert mixed["status"] == "ok"
    probs = val_probs(mixed)
    assert probs.dtype == torch.float64 or probs.dtype == torch.float32
    torch.testing.assert_close(
        probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-5, rtol=0
    )
    # the same run at lower precision: close to, but not the same as, float32
    diff = abs(mixed["val"]["loss"] - plain["val"]["loss"])
    assert 0 < diff < 0.05


def test_channels_last_converts_weights_and_inputs_and_keeps_the_numbers(tmp_path):
    plain, plain_probe = probed(tmp_path, "nchw", [])
    nhwc, probe = probed(tmp_path, "nhwc", ["trainer.channels_last=true"])
    assert plain_probe["inputs_nhwc"] == [False] and not any(plain_probe["weights_nhwc"])
    assert probe["inputs_nhwc"] == [True]
    assert probe["weights_nhwc"] and all(probe["weights_nhwc"])
    # a memory layout, not a different computation
    assert nhwc["val"]["loss"] == pytest.approx(plain["val"]["loss"], rel=1e-4)
    torch.testing.assert_close(val_probs(nhwc), val_probs(plain), atol=1e-5, rtol=1e-4)


def test_compile_traces_the_network_and_leaves_checkpoints_plain(tmp_path):
    plain, plain_probe = probed(tmp_path, "eager", [])
    compiled, probe = probed(tmp_path, "compiled", ["trainer.compile={backend: eager}"])
    assert not plain_probe["compiled"] and probe["compiled"]
    assert compiled["val"]["loss"] == pytest.approx(plain["val"]["loss"], rel=1e-6)
    torch.testing.assert_close(val_probs(compiled), val_probs(plain))
    ckpt = f"{compiled['paths']['run_dir']}/{compiled['paths']['checkpoint']}"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    reference = torch.load(
        f"{plain['paths']['run_dir']}/{plain['paths']['checkpoint']}",
        map_location="cpu",
        weights_only=True,
    )["state_dict"]
    assert sorted(state) == sorted(reference)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.channels_last=yes", "trainer.channels_last"),
        ("trainer.compile=3", "trainer.compile"),
        ("trainer.threads=0", "trainer.threads"),
        ("trainer.keep_freed_memory=sometimes", "trainer.keep_freed_memory"),
    ],
)
def test_bad_module_options_stop_before_training(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(compose([*SHORT, override], tmp_path))


def test_gpu_option_asks_for_mixed_precision_and_channels_last(tmp_path):
    cfg = compose(["trainer=gpu"], tmp_path)
    assert cfg.trainer.precision == "16-mixed"
    assert cfg.trainer.channels_last is True and cfg.trainer.compile is False
    check_config(cfg)
