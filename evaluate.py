"""Evaluate a trained run or a multirun folder: python evaluate.py run=<folder> [eval.<field>=...]"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Evaluate ``cfg.run`` with the settings of ``cfg.eval``."""
    from medsweep.evaluation import EvalSettings, evaluate_path
    from medsweep.evaluation.cli import print_evaluations

    print_evaluations(evaluate_path(cfg.run, EvalSettings.from_config(cfg.eval)))


if __name__ == "__main__":
    main()
