"""Evaluation of trained runs: metrics with CIs, paired tests, thresholds, calibration, fold
ensembles, TTA, Grad-CAM and the evaluation and error-analysis pages."""

from medsweep.evaluation.data import EvalData, Part, load_run
from medsweep.evaluation.runner import (
    EVAL_DIRNAME,
    Evaluation,
    evaluate_data,
    evaluate_path,
    evaluate_run,
)
from medsweep.evaluation.settings import EvalSettings
from medsweep.evaluation.thresholds import load_thresholds

__all__ = [
    "EVAL_DIRNAME",
    "EvalData",
    "EvalSettings",
    "Evaluation",
    "Part",
    "evaluate_data",
    "evaluate_path",
    "evaluate_run",
    "load_run",
    "load_thresholds",
]
