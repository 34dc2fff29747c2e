"""Composition that cannot silently go wrong: swaps take whole options, leftovers stop the run."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch
from helpers import CONF, FAST, compose, run, run_cli
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from medsweep.config_check import ConfigError, check_config
from medsweep.models.finetune import TwoPhaseUnfreezing
from medsweep.pipeline import build_datamodule, build_model, build_module, build_trainer

# the preset's own model at 32 px, one batch per stage
QUICK = [
    "trainer=debug",
    "data.image_size=32",
    "data.batch_size=8",
    "callbacks.progress_bar=null",
    "model.pretrained=false",  # the presets ask for ImageNet weights (online)
]


def _no_training_happened(run_dir) -> str:
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "history.csv").exists()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "failed"
    return saved["error"]


# -- swapping a group on the command line takes the whole option ----------------------------------


def test_preset_scheduler_swapped_for_plateau(tmp_path):
    cfg = compose(["experiment=isic_multiclass", "scheduler=plateau", *QUICK], tmp_path)
    plain = compose(["scheduler=plateau"], tmp_path)
    assert OmegaConf.to_container(cfg.scheduler) == OmegaConf.to_container(plain.scheduler)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm, build_model(cfg, dm))
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience, scheduler.mode) == (0.1, 3, "max")
    record = run(["experiment=isic_multiclass", "scheduler=plateau", *QUICK], tmp_path / "run")
    assert record["status"] == "ok"


def test_preset_model_swapped_for_classical(tmp_path):
    overrides = [
        "experiment=melanoma_binary",
        "model=classical",
        "data.image_size=16",
        "model.max_train_samples=200",
        "model.n_threads=1",
    ]
    cfg = compose(overrides, tmp_path)
    assert "head" not in cfg.model and cfg.model.estimator == "logreg"
    record = run(overrides, tmp_path)
    assert record["status"] == "ok" and record["val"]["auroc"] > 0.5


def test_preset_finetune_swapped_for_full(tmp_path):
    overrides = ["experiment=fashion_benchmark/resnet18_two_phase", "finetune=full", *QUICK]
    cfg = compose(overrides, tmp_path)
    assert cfg.finetune.policy is None
    trainer = build_trainer(cfg, tmp_path, [])
    assert not any(isinstance(c, TwoPhaseUnfreezing) for c in trainer.callbacks)
    assert run(overrides, tmp_path / "run")["status"] == "ok"
    # and the preset itself still unfreezes after its 10 head-only epochs (tests/test_protocols.py)
    policy = compose(["experiment=fashion_benchmark/resnet18_two_phase"], tmp_path).finetune.policy
    assert (policy.head_epochs, policy.unfreeze_stages, policy.lr_factor) == (10, -1, 0.1)


def test_preset_model_swapped_for_resnet18_has_its_linear_head(tmp_path):
    cfg = compose(["experiment=fashion_benchmark/mlp_features", "model=resnet18", *QUICK], tmp_path)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    assert isinstance(model.head, torch.nn.Linear) and model.name == "resnet18"
    assert model.head.in_features == 512 and model.head.out_features == 10  # resnet18's features
    preset = compose(["experiment=fashion_benchmark/mlp_features", *QUICK], tmp_path)
    assert (preset.model.head, list(preset.model.head_hidden), preset.model.head_dropout) == (
        "mlp",
        [128, 64],
        0.2,
    )


def test_preset_callbacks_swapped_for_no_early_stopping(tmp_path):
    cfg = compose(["experiment=melanoma_binary", "callbacks=no_early_stopping"], tmp_path)
    assert cfg.callbacks.early_stopping is None
    assert compose(["experiment=melanoma_binary"], tmp_path).callbacks.early_stopping.patience == 10


# -- _self_ first: presets and grids set train.yaml's keys, the command line still wins -----------


def test_command_line_wins_over_preset(tmp_path):
    cfg = compose(
        ["experiment=melanoma_binary", "monitor=val/f1", "seed=7", "data.image_size=48"], tmp_path
    )
    assert (cfg.monitor, cfg.seed, cfg.data.image_size) == ("val/f1", 7, 48)
    assert cfg.callbacks.early_stopping.monitor == cfg.scheduler.monitor == "val/f1"
    assert compose(["experiment=melanoma_binary", "loss=bce"], tmp_path).loss._target_.endswith(
        "BCEWithLogitsLoss"
    )


def test_preset_and_grid_set_train_yaml_keys(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "keyed.yaml").write_text(
        "# @package _global_\ntask: multilabel\nseed: 7\nmonitor: val/f1\nmonitor_mode: min\n"
        "defaults:\n  - override /data: digits_multilabel\n  - override /loss: bce\n"
    )
    (conf / "sweep" / "keyed.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /experiment: keyed\n"
        "hydra:\n  sweep:\n    dir: outputs/multirun/keyed\n"
    )
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["sweep=keyed"], return_hydra_config=True)
        cli = hydra_compose("train", overrides=["sweep=keyed", "seed=3"])
    assert (cfg.task, cfg.seed, cfg.monitor, cfg.monitor_mode) == ("multilabel", 7, "val/f1", "min")
    assert cfg.hydra.sweep.dir == "outputs/multirun/keyed"
    assert cli.seed == 3


# -- unknown keys and wrong values stop the run before training, naming key, group and source -----


@pytest.mark.parametrize(
    ("overrides", "key", "group"),
    [
        (["+optimizer.lrr=0.1"], "optimizer.lrr", "optimizer"),
        (["model=resnet18", "+model.hed=mlp"], "model.hed", "model"),
        (["experiment=melanoma_binary", "+model.hed=mlp"], "model.hed", "model"),
        (["+scheduler.scheduler.warmup_epochs=2"], "scheduler", "scheduler"),  # scheduler=none
        (
            ["+augmentation.albumentations.2.limitt=10"],
            "augmentation.albumentations[2]",
            "augmentation",
        ),
        (["+trainer.max_epoch=3"], "trainer.max_epoch", "trainer"),
        (["+data.source.variantt=binary"], "data.source.variantt", "data"),
    ],
)
def test_unknown_key_stops_before_training(overrides, key, group, tmp_path):
    with pytest.raises(ConfigError) as info:
        run([*FAST, *overrides], tmp_path)
    message = str(info.value)
    assert key in message and f"group {group}" in message, message
    assert f"set by the override {overrides[-1]!r}" in message, message
    assert "unknown key" in _no_training_happened(tmp_path) or "_target_" in message


def test_unknown_key_suggests_the_close_name(tmp_path):
    with pytest.raises(ConfigError, match="did you mean lr"):
        check_config(compose([*FAST, "+optimizer.lrr=0.1"], tmp_path))


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optimizer.lr=abc", "optimizer.lr", "'abc' (str) does not fit torch.optim.Adam's lr"),
        ("data.image_size=-1", "data.image_size", "-1 must be a positive integer"),
        ("data.batch_size=0", "data.batch_size", "0 must be a positive integer"),
        ("data.channels=2", "data.channels", "2 must be one of [1, 3]"),
        ("data.normalization=imagenette", "data.normalization", "must be one of ['auto'"),
        ("trainer.max_epochs=ten", "trainer.max_epochs", "'ten' (str) does not fit"),
        ("trainer.precision=17", "trainer.precision", "17 (int) does not fit"),
        ("scheduler.interval=batch", "scheduler.interval", "must be one of ['epoch', 'step']"),
        ("model.head_dropout=[0.1]", "model.head_dropout", "does not fit"),
    ],
)
def test_wrong_value_stops_before_training(override, key, expected, tmp_path):
    with pytest.raises(ConfigError) as info:
        run([*FAST, override], tmp_path)
    message = str(info.value)
    assert (f"{key}: " in message or f"{key}=" in message) and expected in message, message
    assert f"set by the override {override!r}" in message
    _no_training_happened(tmp_path)


def test_leftover_of_a_preset_names_the_preset_file(tmp_path):
    """A preset that patches its model's fields fails on a model swap, naming the preset (Hydra app)."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "patched.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: efficientnet_b0\n"
        "model:\n  head: mlp\n  head_dropout: 0.3\n"
    )
    result = run_cli(
        [
            "train.py",
            f"--config-path={conf}",
            "experiment=patched",
            "model=classical",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert result.returncode != 0
    for text in ("model.head: unknown key", "model.head_dropout: unknown key", "group model"):
        assert text in result.stderr, result.stderr[-3000:]
    assert "set by conf/experiment/patched.yaml" in result.stderr
    _no_training_happened(tmp_path / "run")


def test_option_file_named_when_no_override_or_preset_set_the_key(tmp_path):
    cfg = compose([*FAST, "callbacks=no_early_stopping"], tmp_path)
    OmegaConf.update(cfg, "callbacks.early_stopping", {"patience": 3}, force_add=True)
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    message = str(info.value)
    assert "callbacks.early_stopping: has no _target_" in message
    assert "group callbacks, set by conf/callbacks/no_early_stopping.yaml" in message


def test_pipeline_arguments_and_keys(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes: is set by the pipeline"):
        check_config(compose([*FAST, "+model.num_classes=3"], tmp_path))
    check_config(compose([*FAST, "++trainer.threads=1"], tmp_path))  # the pipeline pops it
    with pytest.raises(ConfigError, match="trainer.threadz: unknown key"):
        check_config(compose([*FAST, "+trainer.threadz=1"], tmp_path))
    with pytest.raises(ConfigError, match="model.name: is required by .*timm_classifier"):
        check_config(compose([*FAST, "model=resnet18", "~model.name"], tmp_path))


def test_kwargs_target_accepts_what_it_passes_on(tmp_path):
    """timm_classifier passes extra keys to timm: vit's img_size passes, resnet's does not."""
    check_config(compose([*FAST, "model=vit_tiny"], tmp_path))  # img_size
    with pytest.raises(ConfigError, match=r"model.img_size: unknown key.*ResNet"):
        check_config(compose([*FAST, "model=resnet18", "+model.img_size=32"], tmp_path))


def test_a_wrong_plain_value_stops_train_py_before_torch_is_imported(tmp_path):
    """Plain fields are checked before the pipeline's imports: answered without torch/Lightning."""
    run_dir = tmp_path / "run"
    result = run_cli(
        ["-X", "importtime", "train.py", "data.image_size=0", f"hydra.run.dir={run_dir}"]
    )
    assert result.returncode != 0
    assert "data.image_size=0 must be" in result.stderr, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "medsweep.config_check" in imported  # -X importtime did list the imports
    assert not imported & {"torch", "lightning", "timm", "sklearn"}, sorted(imported)[:20]
    assert not (run_dir / "metrics.json").exists()  # nothing was started


def test_the_pipeline_imports_neither_scikit_learn_nor_pandas_nor_scipy_signal():
    """Importing the pipeline (every run's start-up) leaves out what runs after training (the
    predictions table, the log-loss) or only in some runs (the splitters, the classical models):
    scikit-learn and pandas, with scipy's statistics, about 0.5 s; and scipy.signal, which
    torchmetrics imports for its audio metrics (0.7-1 s). The metrics still compute, and a later
    ``import scipy.signal`` is the real module."""
    code = textwrap.dedent(
        """
        import json, sys
        import medsweep.pipeline
        out = {
            "libraries": sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'pandas'}),
            "classical": 'medsweep.models.classical' in sys.modules,
            "signal": 'scipy.signal' in sys.modules,
        }
        import torch
        from torchmetrics.classification import BinaryAUROC
        auroc = BinaryAUROC()
        auroc.update(torch.tensor([0.1, 0.8, 0.45, 0.4]), torch.tensor([0, 1, 0, 1]))
        out["auroc"] = float(auroc.compute())
        import scipy.signal
        out["window"] = scipy.signal.windows.hamming(3).tolist()
        print(json.dumps(out))
        """
    )
    result = run_cli(["-c", code])
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["libraries"] == [] and not out["classical"] and not out["signal"]
    assert out["auroc"] == pytest.approx(
        0.75
    )  # (pos, neg) pairs: 0.8 above both, 0.4 above 0.1 only
    assert out["window"] == pytest.approx([0.08, 1.0, 0.08])  # 0.54 - 0.46 cos(2 pi n / 2)
