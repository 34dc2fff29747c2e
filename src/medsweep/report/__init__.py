"""Sweep reports: tables, statistics and figures from the metrics.json files of a multirun."""

from medsweep.report.build import Report, build_report, resolve_metric
from medsweep.report.collect import collect_runs, find_run_dirs, load_run, metric_columns
from medsweep.report.configs import config_labels, resolve_baseline
from medsweep.report.errors import ReportError
from medsweep.report.stats import (
    PairedTest,
    compare_to_baseline,
    corrected_resampled_ttest,
    mean_std,
    paired_comparison,
    wilcoxon_p,
)
from medsweep.report.tables import per_fold_table, summary_table, to_markdown

__all__ = [
    "PairedTest",
    "Report",
    "ReportError",
    "build_report",
    "collect_runs",
    "compare_to_baseline",
    "config_labels",
    "corrected_resampled_ttest",
    "find_run_dirs",
    "load_run",
    "mean_std",
    "metric_columns",
    "paired_comparison",
    "per_fold_table",
    "resolve_baseline",
    "resolve_metric",
    "summary_table",
    "to_markdown",
    "wilcoxon_p",
]
