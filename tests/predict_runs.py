"""A tiny binary image-folder study for the predict command and the app: two k-fold runs of one
configuration in one multirun folder, evaluated (per run and as a fold ensemble)."""

from __future__ import annotations

from pathlib import Path

from helpers import compose, write_image_folder

# a few real training steps, so that every val/test sample has a saved prediction
TRAIN = [
    "data=imagefolder",
    "data.channels=1",
    "data.image_size=16",
    "data.batch_size=64",
    "data.num_workers=0",
    "model=small_cnn",
    "loss=bce",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "callbacks.progress_bar=null",
    "fold=kfold",
    "fold.n_folds=2",
]
CLASSES = ["digit0", "digit1"]


def train_study(root: Path) -> dict[str, Path]:
    """Image folder ``root/data`` (2 digit classes), runs ``root/multirun/fold{0,1}``, evaluated."""
    from medsweep.evaluation import EvalSettings, evaluate_path
    from medsweep.pipeline import train

    data = write_image_folder(root / "data", n_per_class=20, classes=2)
    multirun = root / "multirun"
    for fold in (0, 1):
        cfg = compose(
            [*TRAIN, f"data.source.root={data}", f"fold.index={fold}"], multirun / f"fold{fold}"
        )
        # what a Hydra multirun records: the swept overrides (the configuration key stays short)
        cfg.overrides = ["model=small_cnn", f"fold.index={fold}"]
        record = train(cfg)
        assert record["status"] == "ok" and record["task"] == "binary", record.get("error")
    settings = EvalSettings(n_boot=100, tta=False, cam=False, thumbnails=False, wandb=False)
    evaluate_path(multirun, settings)
    return {
        "data": data,
        "multirun": multirun,
        "fold0": multirun / "fold0",
        "fold1": multirun / "fold1",
    }
