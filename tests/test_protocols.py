"""Study presets and grids against the studies' protocols (/work/shared/studies/PROTOCOLS.md).

Three tables say what each study used, value by value: ``PRESETS`` (the composed preset),
``GRIDS`` (every named grid's arms) and ``ARMS`` (what one arm of a grid composes to). A preset or
grid that drifts from its study fails here. The docs pages' "study vs preset" and "grids" tables
name the option or field that sets each value (``optimizer.lr=0.0001``); those are checked
against the composed configs too, so a page cannot drift from its preset either.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
import yaml
from helpers import CONF, ROOT
from omegaconf import DictConfig, ListConfig, OmegaConf

# the study's value of each field (or each group's chosen option, as "group=": option)
PRESETS: dict[str, dict[str, object]] = {
    # S2: ResNet-18 (ImageNet), SGD 1e-3 momentum 0.9, CE, batch 32, 5 folds, fixed epochs, no aug
    "brain_mri": {
        "model=": "resnet18_imagenet",
        "model.name": "resnet18",
        "model.pretrained": True,
        "optimizer._target_": "torch.optim.SGD",
        "optimizer.lr": 1e-3,
        "optimizer.momentum": 0.9,
        "optimizer.weight_decay": 0.0,
        "loss._target_": "medsweep.losses.CrossEntropyLoss",
        "data.batch_size": 32,
        "data.image_size": 224,
        "fold.n_folds": 5,
        "augmentation.albumentations": [],
        "balance.class_weights": None,
        "callbacks.early_stopping": None,
        "scheduler.scheduler": None,
        "trainer.max_epochs": 20,
    },
    # S1 baseline: ResNet-18 (ImageNet), Adam 1e-4, batch 64, 224 px, BCEWithLogits, 5-fold CV
    "ich_multilabel": {
        "model=": "resnet18_imagenet",
        "model.name": "resnet18",
        "model.pretrained": True,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 1e-4,
        "data.batch_size": 64,
        "data.image_size": 224,
        "data.normalization": "half",  # "Normal": resize + normalize 0.5 / 0.5
        "data.source.variant": "multilabel",
        "loss._target_": "medsweep.losses.BCEWithLogitsLoss",
        "loss.pos_weight": None,
        "augmentation.albumentations": [],
        "balance.oversample": False,
        "fold.n_folds": 5,
    },
    # S1 final choice: 512 px, focal alpha 0.5 (gamma 2), dropout 0.3, Adam + weight decay, plateau
    "ich_multilabel/final": {
        "data.image_size": 512,
        "loss._target_": "medsweep.losses.FocalLoss",
        "loss.alpha": 0.5,
        "loss.gamma": 2.0,
        "model.head_dropout": 0.3,
        "model.pretrained": True,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.weight_decay": 1e-4,
        "scheduler.scheduler._target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "scheduler.scheduler.factor": 0.1,
        "scheduler.scheduler.patience": 3,
        "augmentation=": "moderate",
    },
    # S0: EfficientNet-B0 (ImageNet), GAP -> 512 -> 256 (BN, ReLU, dropout 0.5) -> 1 sigmoid,
    # Adam 1e-3, batch 32, BCE; phase 2 at 1e-5 for <= 25 epochs; plateau on val AUC; patience 10
    "melanoma_binary": {
        "model.name": "efficientnet_b0",
        "model.pretrained": True,
        "model.head": "mlp",
        "model.head_hidden": [512, 256],
        "model.head_dropout": 0.5,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 1e-3,
        "data.batch_size": 32,
        "data.image_size": 224,
        "data.source.variant": "binary",
        "loss._target_": "medsweep.losses.CrossEntropyLoss",  # one logit: sigmoid BCE
        "balance.class_weights": None,  # the study's training set is balanced (66 / 66)
        "finetune.policy._target_": "medsweep.models.finetune.TwoPhaseUnfreezing",
        "finetune.policy.head_epochs": 11,
        "finetune.policy.unfreeze_stages": 1,
        "finetune.policy.lr_factor": 0.01,
        "trainer.max_epochs": 36,  # 11 + the study's 25 of phase 2
        "scheduler.scheduler._target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "scheduler.monitor": "val/auroc",
        "callbacks.early_stopping.patience": 10,
        "callbacks.early_stopping.monitor": "val/auroc",
        "callbacks.model_checkpoint.monitor": "val/auroc",
    },
    # S4: AdamW 1e-4 head / 1e-5 backbone, warm restarts + warmup, batch 64 x 2, 50 epochs,
    # patience 10, class weights and focal loss, 384 px, 10-fold CV (planned), 15 % test
    "isic_multiclass": {
        "model.name": "efficientnet_b0",
        "model.pretrained": True,
        "optimizer._target_": "torch.optim.AdamW",
        "optimizer.lr": 1e-4,
        "finetune.backbone_lr_scale": 0.1,
        "scheduler.scheduler._target_": "medsweep.schedulers.warmup_cosine",
        "scheduler.scheduler.warmup_epochs": 2,
        "scheduler.scheduler.restart_epochs": 8,
        "data.batch_size": 64,
        "trainer.accumulate_grad_batches": 2,
        "trainer.max_epochs": 50,
        "callbacks.early_stopping.patience": 10,
        "balance.class_weights": "inverse",
        "loss._target_": "medsweep.losses.FocalLoss",
        "data.image_size": 384,
        "fold.n_folds": 10,
        "fold.test_fraction": 0.15,
        "monitor": "val/balanced_acc",
    },
    # S3, Fashion arms
    "fashion_benchmark/mlp_features": {
        "model.head_hidden": [128, 64],
        "model.head_dropout": 0.2,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 1e-3,
        "data.batch_size": 64,
        "trainer.max_epochs": 50,
        "callbacks.early_stopping": None,
    },
    "fashion_benchmark/mlp_pixels": {
        "model.hidden": [512, 256, 128],
        "model.dropout": 0.3,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 1e-3,
        "data.batch_size": 64,
        "trainer.max_epochs": 50,
    },
    "fashion_benchmark/small_cnn": {
        "model.widths": [32, 64, 128],
        "model.head": "mlp",
        "model.head_hidden": [256, 128],
        "model.head_dropout": 0.5,
        "optimizer._target_": "torch.optim.RMSprop",
        "optimizer.lr": 5e-4,
        "optimizer.weight_decay": 0.02,  # Keras L2 0.01: gradient 0.02 * w
        "data.batch_size": 128,
        "trainer.max_epochs": 50,
        "augmentation.albumentations": [],
    },
    "fashion_benchmark/small_cnn_augmented": {
        "model.head_hidden": [256, 128],
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 5e-4,
        "data.batch_size": 128,
        "trainer.max_epochs": 50,
        "augmentation=": "flip_crop_rotate",
    },
    "fashion_benchmark/resnet18_two_phase": {
        "model.name": "resnet18",
        "model.pretrained": True,
        "model.head_hidden": [256],
        "model.head_dropout": 0.5,
        "optimizer._target_": "torch.optim.SGD",
        "optimizer.lr": 1e-3,
        "optimizer.momentum": 0.9,
        "data.batch_size": 64,
        "finetune.policy.head_epochs": 10,
        "finetune.policy.unfreeze_stages": -1,
        "finetune.policy.lr_factor": 0.1,
        "trainer.max_epochs": 20,
    },
    # S3, Fruits arm: ResNet-18 (ImageNet) at 32 px, SGD 0.01 + StepLR(5), then all layers at 1e-3
    "fruits360": {
        "model.name": "resnet18",
        "model.pretrained": True,
        "data.image_size": 32,
        "optimizer._target_": "torch.optim.SGD",
        "optimizer.lr": 0.01,
        "optimizer.momentum": 0.9,
        "scheduler.scheduler._target_": "torch.optim.lr_scheduler.StepLR",
        "scheduler.scheduler.step_size": 5,
        "finetune.policy.head_epochs": 5,
        "finetune.policy.unfreeze_stages": -1,
        "trainer.max_epochs": 15,  # 5 + the study's 10 of phase 2
    },
    # medsweep's own recipe: pretrained offline backbone, augmentation, balancing, schedule, k-fold
    "small_medical": {
        "model.name": "efficientnet_lite0",
        "model.pretrained": True,
        "model.weights": "packaged",
        "augmentation=": "small_medical",
        "balance.class_weights": "inverse",
        "scheduler=": "cosine",
        "fold.n_folds": 5,
    },
}

# every grid's arms, in order (fold.index is checked apart)
GRIDS: dict[str, dict[str, list[str]]] = {
    "brain_mri/balance": {
        "balance": ["none", "class_weights", "oversample_duplicate"],
        "augmentation": ["none", "flip_crop_rotate"],
    },
    "brain_mri/augmentation": {
        "augmentation": ["none", "basic", "intensity_brain_mri", "distortion", "blur"]
    },
    "brain_mri/stopping": {
        "callbacks": ["no_early_stopping", "stop_loss_p3"],
        "scheduler": ["none", "step5"],
    },
    "brain_mri/focal": {"loss": ["ce", "focal", "focal_g3", "focal_g4"]},
    "brain_mri/focal_alpha": {"loss": ["focal"], "optimizer.lr": ["0.001", "0.00025"]},
    "brain_mri/optimizer": {"optimizer": ["sgd", "adam", "rmsprop"], "loss": ["ce", "focal_g3"]},
    "brain_mri/batch_size": {"data.batch_size": ["16", "32", "64", "128"]},
    "brain_mri/regularization": {
        "optimizer.weight_decay": ["0.0", "0.0001", "0.01"],
        "model.head_dropout": ["0.0", "0.3"],
    },
    "brain_mri/finetune": {
        "model": ["efficientnet_b0_imagenet"],
        "finetune": ["full", "frozen"],
        "data.batch_size": ["16"],
        "balance": ["class_weights"],
        "augmentation": ["hflip_rotate"],
    },
    "ich_multilabel/balance": {
        "balance": ["none", "pos_weight", "oversample"],
        "augmentation": ["none", "moderate"],
    },
    "ich_multilabel/augmentation": {"augmentation": ["none", "moderate", "aggressive"]},
    "ich_multilabel/stopping": {
        "augmentation": ["moderate"],
        "callbacks": ["no_early_stopping", "stop_loss_p4"],
        "scheduler": ["none", "step", "plateau_loss"],
    },
    "ich_multilabel/focal": {"loss": ["bce", "focal_a025", "focal_a05", "focal_a075"]},
    "ich_multilabel/optimizer": {"optimizer": ["adam", "sgd", "rmsprop"]},
    "ich_multilabel/dropout": {"model.head_dropout": ["0.0", "0.3", "0.5"]},
    "ich_multilabel/weight_decay": {"optimizer.weight_decay": ["0.0", "0.0001"]},
    "ich_multilabel/finetune": {"finetune": ["frozen", "full"]},
    "melanoma_binary/balance": {"balance": ["none", "class_weights", "oversample"]},
    "melanoma_binary/class_weight": {"loss": ["ce", "bce_pw25"]},
    "melanoma_binary/finetune": {"finetune": ["two_phase_melanoma", "full", "frozen"]},
    "melanoma_binary/head": {"model.head": ["mlp", "linear"]},
    "isic_multiclass/architecture": {
        "model.name": [
            "resnet50",
            "efficientnet_b0",
            "efficientnet_b1",
            "efficientnet_b2",
            "efficientnet_b3",
            "efficientnet_b4",
            "tf_efficientnet_b5",
            "tf_efficientnet_b6",
            "densenet201",
            "vit_base_patch16_384",
            "swin_base_patch4_window12_384",
        ]
    },
    "isic_multiclass/backbone_lr": {"finetune.backbone_lr_scale": ["1.0", "0.1", "0.01"]},
    "isic_multiclass/image_size": {"data.image_size": ["224", "384", "512"]},
    "isic_multiclass/loss": {"loss": ["focal", "ce"], "balance": ["class_weights", "none"]},
    "isic_multiclass/mixing": {
        "augmentation.batch_transform.mixup_alpha": ["0.0", "0.2"],
        "augmentation.batch_transform.cutmix_alpha": ["0.0", "1.0"],
    },
    "isic_multiclass/precision": {"trainer.precision": ["32-true", "16-mixed"]},
    "fashion_benchmark/arms": {
        "experiment": [
            "fashion_benchmark/mlp_features",
            "fashion_benchmark/mlp_pixels",
            "fashion_benchmark/small_cnn",
            "fashion_benchmark/small_cnn_augmented",
            "fashion_benchmark/resnet18_two_phase",
            "fashion_benchmark/classical_logreg",
            "fashion_benchmark/classical_svc",
            "fashion_benchmark/classical_random_forest",
            "fashion_benchmark/classical_hist_gb",
        ]
    },
    "small_medical/evidence": {
        "experiment": [
            "small_medical",
            "small_medical/scratch_resnet18",
            "small_medical/no_pretraining",
            "small_medical/no_augmentation",
            "small_medical/constant_lr",
            "small_medical/no_balancing",
        ]
    },
}
FOLDS = {"isic_multiclass": 10}  # the others: 5

# what an arm composes to: (preset, the arm's overrides) -> the study's values
ARMS: list[tuple[str, tuple[str, ...], dict[str, object]]] = [
    # S2 augmentation sets
    (
        "brain_mri",
        ("augmentation=basic",),
        {
            "ops": ["HorizontalFlip", "VerticalFlip", "Rotate"],
            "augmentation.albumentations.2.limit": 15,
        },
    ),
    (
        "brain_mri",
        ("augmentation=intensity_brain_mri",),
        {
            "ops": ["ColorJitter"],
            "augmentation.albumentations.0.brightness": 0.5,
            "augmentation.albumentations.0.contrast": 0.5,
            "augmentation.albumentations.0.saturation": 0.5,
            "augmentation.albumentations.0.hue": 0.5,
        },
    ),
    (
        "brain_mri",
        ("augmentation=distortion",),
        {
            "ops": ["Perspective", "Affine", "RandomResizedCrop"],
            "augmentation.albumentations.0.p": 0.5,
            "augmentation.albumentations.1.p": 0.5,
            "augmentation.albumentations.2.scale": [0.8, 1.0],
        },
    ),
    (
        "brain_mri",
        ("augmentation=blur",),
        {"ops": ["GaussianBlur"], "augmentation.albumentations.0.blur_limit": [5, 5]},
    ),
    (
        "brain_mri",
        ("augmentation=flip_crop_rotate",),
        {
            "ops": ["HorizontalFlip", "RandomResizedCrop", "Rotate"],
            "augmentation.albumentations.2.limit": 15,
        },
    ),
    # S2 early stopping and StepLR
    (
        "brain_mri",
        ("callbacks=stop_loss_p3",),
        {
            "callbacks.early_stopping.patience": 3,
            "callbacks.early_stopping.min_delta": 0.1,
            "callbacks.early_stopping.monitor": "val/loss",
            "callbacks.early_stopping.mode": "min",
        },
    ),
    (
        "brain_mri",
        ("scheduler=step5",),
        {"scheduler.scheduler.step_size": 5, "scheduler.scheduler.gamma": 0.1},
    ),
    # S2 focal (alpha 1 = no alpha) and alpha 0.25 as the SGD rate x 0.25
    ("brain_mri", ("loss=focal",), {"loss.gamma": 2.0, "loss.alpha": None}),
    ("brain_mri", ("loss=focal_g3",), {"loss.gamma": 3.0, "loss.alpha": None}),
    ("brain_mri", ("loss=focal_g4",), {"loss.gamma": 4.0, "loss.alpha": None}),
    (
        "brain_mri",
        ("loss=focal", "optimizer.lr=0.00025"),
        {"loss.gamma": 2.0, "optimizer.weight_decay": 0.0, "optimizer.nesterov": False},
    ),
    # S2 regularisation, optimizers, EfficientNet-B0 bonus
    ("brain_mri", ("optimizer=adam",), {"optimizer.lr": 1e-3}),
    ("brain_mri", ("optimizer=rmsprop",), {"optimizer.lr": 1e-3}),
    (
        "brain_mri",
        (
            "model=efficientnet_b0_imagenet",
            "finetune=frozen",
            "data.batch_size=16",
            "balance=class_weights",
            "augmentation=hflip_rotate",
        ),
        {
            "model.name": "efficientnet_b0",
            "model.pretrained": True,
            "finetune.policy._target_": "medsweep.models.finetune.FrozenBackbone",
            "data.batch_size": 16,
            "balance.class_weights": "inverse",
            "ops": ["HorizontalFlip", "Rotate"],
            "trainer.max_epochs": 20,
        },
    ),
    # S1 augmentation: Moderate and Aggressive (holes as fractions of 224 px)
    (
        "ich_multilabel",
        ("augmentation=moderate",),
        {
            "ops": ["Rotate", "HorizontalFlip", "RandomBrightnessContrast", "CoarseDropout"],
            "augmentation.albumentations.0.limit": 15,
            "augmentation.albumentations.2.brightness_limit": 0.05,
            "augmentation.albumentations.2.contrast_limit": 0.05,
            "augmentation.albumentations.3.hole_height_range": [7 / 224, 7 / 224],
        },
    ),
    (
        "ich_multilabel",
        ("augmentation=aggressive",),
        {
            "ops": ["GaussianBlur", "RandomBrightnessContrast", "CoarseDropout"],
            "augmentation.albumentations.0.blur_limit": [3, 5],
            "augmentation.albumentations.1.contrast_limit": 0.15,
            "augmentation.albumentations.2.hole_height_range.1": pytest.approx(26 / 224, abs=1e-3),
        },
    ),
    # S1 stopping: early stopping patience 4 on the val loss; plateau x0.1 patience 3
    (
        "ich_multilabel",
        ("callbacks=stop_loss_p4",),
        {"callbacks.early_stopping.patience": 4, "callbacks.early_stopping.monitor": "val/loss"},
    ),
    (
        "ich_multilabel",
        ("scheduler=plateau_loss",),
        {
            "scheduler.scheduler.factor": 0.1,
            "scheduler.scheduler.patience": 3,
            "scheduler.monitor": "val/loss",
            "scheduler.scheduler.mode": "min",
        },
    ),
    # S1 focal: gamma 2, alpha 0.25 / 0.5 / 0.75
    ("ich_multilabel", ("loss=focal_a025",), {"loss.gamma": 2.0, "loss.alpha": 0.25}),
    ("ich_multilabel", ("loss=focal_a05",), {"loss.gamma": 2.0, "loss.alpha": 0.5}),
    ("ich_multilabel", ("loss=focal_a075",), {"loss.gamma": 2.0, "loss.alpha": 0.75}),
    # S0's suggested class weight {0: 1, 1: 2.5}
    ("melanoma_binary", ("loss=bce_pw25",), {"loss.pos_weight": 2.5}),
]


@cache
def _compose(overrides: tuple[str, ...]) -> DictConfig:
    """``conf/train.yaml`` composed with its ``hydra`` node (sweeper params, runtime choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from medsweep.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def _value(cfg: DictConfig, path: str) -> object:
    """A field of the composed config (``group=`` is the chosen option; ``ops`` the op names)."""
    if path.endswith("="):
        return cfg.hydra.runtime.choices[path[:-1]]
    if path == "ops":
        return [op._target_.rsplit(".", 1)[-1] for op in cfg.augmentation.albumentations]
    node = OmegaConf.select(cfg, path, default="<missing>")
    assert node != "<missing>", f"{path} is not a field of the composed config"
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _grid(sweep: str) -> dict[str, list[str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _compose((f"sweep={sweep}",)).hydra.sweeper.params
    parser = OverridesParser.create()
    grid = {}
    for key, value in params.items():
        override = parser.parse_overrides([f"{key}={value}"])[0]
        grid[key] = (
            [str(v) for v in override.sweep_string_iterator()]
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
    return grid


def _all(folder: str) -> list[str]:
    return sorted(
        p.relative_to(CONF / folder).with_suffix("").as_posix()
        for p in (CONF / folder).rglob("*.yaml")
    )


def test_every_preset_and_grid_has_a_protocol_row():
    presets = [p for p in _all("experiment") if not p.startswith("fashion_benchmark/classical")]
    presets = [p for p in presets if not p.startswith("small_medical/")]
    assert set(presets) - {"fashion_benchmark"} <= set(PRESETS), "a preset without its study row"
    assert set(_all("sweep")) == set(GRIDS), "a grid without its row, or a row without its grid"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_matches_its_study(preset):
    cfg = _compose((f"experiment={preset}",))
    drift = {
        path: (_value(cfg, path), want)
        for path, want in PRESETS[preset].items()
        if _value(cfg, path) != want
    }
    assert drift == {}, f"{preset}: field: (preset's value, the study's value)"


def test_derived_study_values():
    melanoma = _compose(("experiment=melanoma_binary",))
    phase2_lr = melanoma.optimizer.lr * melanoma.finetune.policy.lr_factor
    assert phase2_lr == pytest.approx(1e-5)
    assert melanoma.trainer.max_epochs - melanoma.finetune.policy.head_epochs == 25
    isic = _compose(("experiment=isic_multiclass",))
    assert isic.optimizer.lr * isic.finetune.backbone_lr_scale == pytest.approx(1e-5)
    assert isic.data.batch_size * isic.trainer.accumulate_grad_batches == 128
    sched = isic.scheduler.scheduler
    cycles = (isic.trainer.max_epochs - sched.warmup_epochs) / sched.restart_epochs
    assert cycles == int(cycles), "the last warm-restart cycle ends with the run"
    assert _compose(("experiment=isic_multiclass", "trainer=gpu")).trainer.precision == "16-mixed"
    fashion = _compose(("experiment=fashion_benchmark/resnet18_two_phase",))
    assert fashion.optimizer.lr * fashion.finetune.policy.lr_factor == pytest.approx(1e-4)
    assert fashion.trainer.max_epochs - fashion.finetune.policy.head_epochs == 10
    fruits = _compose(("experiment=fruits360",))
    # at the switch StepLR has stepped once: phase 2 starts at the study's 0.001
    steps = fruits.finetune.policy.head_epochs // fruits.scheduler.scheduler.step_size
    start = fruits.optimizer.lr * fruits.scheduler.scheduler.gamma**steps
    assert start * fruits.finetune.policy.lr_factor == pytest.approx(1e-3)
    assert fruits.trainer.max_epochs - fruits.finetune.policy.head_epochs == 10


@pytest.mark.parametrize("sweep", sorted(GRIDS))
def test_grid_has_the_studys_arms(sweep):
    grid = _grid(sweep)
    folds = FOLDS.get(sweep.split("/")[0], 5)
    assert grid.pop("fold.index") == [str(i) for i in range(folds)]
    assert grid == GRIDS[sweep]
    assert _compose((f"sweep={sweep}",)).fold.n_folds == folds


@pytest.mark.parametrize(
    ("preset", "overrides", "want"), ARMS, ids=[f"{p}:{' '.join(o)}" for p, o, _ in ARMS]
)
def test_arm_matches_its_study(preset, overrides, want):
    cfg = _compose((f"experiment={preset}", *overrides))
    got = {path: _value(cfg, path) for path in want}
    assert got == want


# -- the docs pages' tables against the configs ----------------------------------------------------

ASSIGNMENT = re.compile(r"`([A-Za-z_][\w.]*)=([^`\s]+)`")
OPTION_GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}


def _section_rows(page: str, heading: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/{page} has no '## {heading}' section"
    return [line for line in match.group(1).splitlines() if line.startswith("|")]


def _doc_assignments(page: str, heading: str) -> list[tuple[str, str, str]]:
    """``(first cell, key, value)`` for every `key=value` in the last cell of a table's rows."""
    out = []
    for row in _section_rows(page, heading):
        cells = [c.strip() for c in row.strip("|").split("|")]
        out += [(cells[0], k, v) for k, v in ASSIGNMENT.findall(cells[-1])]
    return out


STUDY_PAGES = {
    "brain_mri": ["brain_mri"],
    "ich_multilabel": ["ich_multilabel", "ich_multilabel/final"],
    "melanoma_binary": ["melanoma_binary"],
    "isic_multiclass": ["isic_multiclass"],
    "fruits360": ["fruits360"],
    "small_medical": ["small_medical"],
}


def _check_assignment(cfg: DictConfig, key: str, value: str) -> str | None:
    if key in OPTION_GROUPS:
        got = cfg.hydra.runtime.choices[key]
        return None if got == value else f"{key}: the config chooses {got}"
    node = OmegaConf.select(cfg, key, default="<missing>")
    if node == "<missing>":
        return f"{key} is not a field"
    got = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node
    want = yaml.safe_load(value)
    ok = got == pytest.approx(want) if isinstance(want, float) else got == want
    return None if ok else f"{key}: the config has {got!r}"


@pytest.mark.parametrize("page", sorted(STUDY_PAGES))
def test_docs_study_table_matches_the_preset(page):
    """Each row's `key=value` holds in the preset the row's first cell names (or the page's)."""
    presets = STUDY_PAGES[page]
    problems = []
    rows = _doc_assignments(f"{page}.md", "Study vs preset")
    assert len(rows) >= 5, f"docs/{page}.md: a study-vs-preset table with its config column"
    for first, key, value in rows:
        named = re.findall(r"`experiment=([\w/]+)`", first)
        preset = named[0] if named else presets[0]
        problem = _check_assignment(_compose((f"experiment={preset}",)), key, value)
        if problem:
            problems.append(f"{first}: `{key}={value}`: {problem}")
    assert problems == []


def test_docs_fashion_arms_table_matches_the_arms():
    problems = []
    rows = _doc_assignments("fashion_benchmark.md", "Study vs preset")
    assert len(rows) >= 10
    for first, key, value in rows:
        arm = re.findall(r"`([\w/]+)`", first)
        preset = f"fashion_benchmark/{arm[0]}" if arm else "fashion_benchmark"
        problem = _check_assignment(_compose((f"experiment={preset}",)), key, value)
        if problem:
            problems.append(f"{first}: `{key}={value}`: {problem}")
    assert problems == []


@pytest.mark.parametrize(
    "page", ["brain_mri", "ich_multilabel", "melanoma_binary", "isic_multiclass", "small_medical"]
)
def test_docs_grid_table_matches_the_grids(page):
    """The grids table: first cell the grid's name, last cell its `key=v1,v2` params."""
    problems = []
    for row in _section_rows(f"{page}.md", "Grids"):
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        if not name:
            continue
        grid = _grid(f"{page}/{name.group(1)}")
        grid.pop("fold.index")
        documented = {k: v.split(",") for k, v in ASSIGNMENT.findall(cells[-1])}
        if documented != grid:
            problems.append(f"{name.group(1)}: docs {documented} != grid {grid}")
    assert problems == []


def test_melanoma_phase_two_unfreezes_efficientnet_b0s_last_stage():
    """The study's "last 30 layers": timm's last stage, block 7 (blocks.6) and the head conv."""
    import timm

    from medsweep.models.finetune import backbone_stages

    cfg = _compose(("experiment=melanoma_binary",))
    backbone = timm.create_model(cfg.model.name, pretrained=False, num_classes=0)
    stages = backbone_stages(backbone)
    last = stages[-cfg.finetune.policy.unfreeze_stages :]
    names = {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
        for s in last
        for n in s.names
    }
    assert names == {"blocks.6", "conv_head", "bn2"}
    assert sum(p.numel() for s in last for p in s.parameters) == pytest.approx(1.13e6, rel=0.01)
