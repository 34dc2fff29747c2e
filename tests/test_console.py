"""What a run prints: no library adverts or deprecation notices, every warning about the config."""

from __future__ import annotations

import logging
import warnings
from functools import partial

import lightning as L
import torch
from helpers import run_cli
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsweep.config import quiet_library_noise
from medsweep.models import small_cnn
from medsweep.module import ClassificationModule

NOISE = [
    "litlogger",  # Lightning's advert
    "💡",
    "LeafSpec",  # torch deprecating a name Lightning's pytree helper uses
    "log_every_n_steps",  # fewer batches than the logging interval
    "GPU available: False",
    "TPU available",
]


def test_train_console_has_no_library_noise_but_keeps_config_warnings(tmp_path):
    result = run_cli(
        [
            "train.py",
            "trainer.max_epochs=1",
            "data.image_size=16",
            "model=small_cnn",
            "+trainer.limit_train_batches=2",  # < log_every_n_steps=10
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
            "trainer.precision=16-mixed",  # not on a CPU: Lightning says so
            f"hydra.run.dir={tmp_path}",
        ]
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    assert "Epoch 0/0" in console  # the progress bar ran
    assert "AMP with fp16 is not supported on CPU" in console  # a warning about the config
    assert "`Trainer(limit_val_batches=1)` was configured" in console  # Lightning's other notes
    assert [s for s in NOISE if s in console] == []


def tiny_fit_output(root, quiet: bool) -> str:
    """Log records and warnings of a one-epoch fit built as in a notebook (no train.py)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters = list(logger.filters)  # build_trainer earlier in this process may have added ours
    if not quiet:
        logger.filters = []
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_library_noise()
                quiet_library_noise()  # idempotent
            torch.manual_seed(0)
            x = torch.randn(8, 1, 16, 16)
            loader = DataLoader(TensorDataset(x, torch.arange(8) % 3), batch_size=4)
            module = ClassificationModule(
                small_cnn(3, widths=(4, 8)),
                nn.CrossEntropyLoss(),
                partial(torch.optim.SGD, lr=0.1),
                "multiclass",
                ["a", "b", "c"],
            )
            trainer = L.Trainer(
                accelerator="cpu",
                max_epochs=1,
                limit_val_batches=1,
                logger=CSVLogger(root),
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(module, loader, loader)
    finally:
        logger.removeHandler(handler)
        logger.filters = filters
    return "\n".join([r.getMessage() for r in records] + [str(w.message) for w in caught])


def test_filters_cover_a_trainer_built_in_a_notebook(tmp_path):
    loud = tiny_fit_output(tmp_path / "loud", quiet=False)
    # the noise is there without the filters (the GPU line depends on the machine)
    assert all(s in loud for s in NOISE if s != "GPU available: False"), loud
    quiet = tiny_fit_output(tmp_path / "quiet", quiet=True)
    assert [s for s in NOISE if s in quiet] == []
    for kept in ("`Trainer(limit_val_batches=1)` was configured", "`Trainer.fit` stopped"):
        assert kept in loud and kept in quiet
