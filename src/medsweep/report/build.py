"""Build a sweep report: collect runs, compute tables and statistics, draw figures, and compose
the pages as page models (report.page renders every one of them to Markdown and HTML)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from medsweep.report.collect import (
    check_comparable,
    collect_runs,
    config_order,
    higher_is_better,
    metric_columns,
)
from medsweep.report.configs import (
    common_overrides,
    config_labels,
    label_of,
    resolve_baseline,
    safe_names,
)
from medsweep.report.errors import ReportError
from medsweep.report.page import (
    DASH,
    Details,
    Figure,
    Heading,
    Link,
    Page,
    Table,
    Text,
    render_markdown,
    write_page,
)
from medsweep.report.paired import (
    PAIRED_METHOD,
    evaluation_links,
    paired_comparisons,
    paired_display,
)
from medsweep.report.stats import STATS_COLUMNS, compare_to_baseline
from medsweep.report.tables import (
    failed_runs_table,
    missing_folds,
    per_fold_table,
    stats_display,
    summary_display,
    summary_table,
)

log = logging.getLogger(__name__)

DEFAULT_METRIC = "val/auroc"
REPORT_DIRNAME = "report"
MARKER_FILE = ".medsweep-report"
# Folders the report owns and rewrites on each build (only when the marker says it made them).
OWNED_DIRS = ("figures", "per_config")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

STATS_METHOD = (
    "Differences are configuration minus baseline, paired by fold. 95% CI and p from the "
    "corrected resampled t-test (Nadeau & Bengio 2003): variance (1/k + n_eval/n_train)·s², "
    "df = k-1; n_eval is the validation or test size as the metric says, and 1/(k-1) is used "
    "when sizes are unknown. p (Wilcoxon) from scipy.stats.wilcoxon (two-sided; — with fewer "
    "than two non-zero or all-identical differences). Significant: the CI excludes 0."
)


@dataclass
class Report:
    """Everything a report holds: runs, tables, statistics and where the files went."""

    root: Path
    out_dir: Path
    runs: pd.DataFrame
    metric: str | None
    metrics: list[str]
    baseline: str | None
    summary: pd.DataFrame
    summary_text: pd.DataFrame
    stats: pd.DataFrame
    per_config: dict[str, pd.DataFrame]
    failed: pd.DataFrame
    missing: dict[str, list[int]]
    labels: dict[str, str] = field(default_factory=dict)
    common: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    wandb_dir: Path | None = None
    paired: pd.DataFrame | None = None
    eval_links: pd.DataFrame | None = None

    @property
    def higher_is_better(self) -> bool:
        """Whether larger values of the chosen metric rank first."""
        return self.metric is None or higher_is_better(self.metric, self.runs)


def resolve_metric(runs: pd.DataFrame, metric: str | None) -> str | None:
    """Return the metric to rank by: ``metric`` if valid, else val/auroc or the first available."""
    available = metric_columns(runs)
    if metric is not None:
        if metric in available:
            return metric
        valid = ", ".join(available) if available else "none (no run finished with metrics)"
        raise ReportError(f"unknown metric {metric!r}; valid metrics are: {valid}")
    if DEFAULT_METRIC in available:
        return DEFAULT_METRIC
    headline = metric_columns(runs, headline_only=True)
    preferred = [m for m in headline if not m.endswith("/loss")] or headline or available
    return preferred[0] if preferred else None


def _check_out_dir(root: Path, out_dir: Path) -> None:
    """Refuse an output folder that would mix report files with the runs themselves."""
    root_r, out_r = root.resolve(), out_dir.resolve()
    if out_r == root_r or root_r.is_relative_to(out_r):
        raise ReportError(
            f"output folder {out_dir} holds the runs of {root}; choose a separate folder "
            f"(default: {root / REPORT_DIRNAME})"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"output path {out_dir} exists and is not a folder")


def _prepare_out_dir(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / MARKER_FILE
    if marker.is_file():
        for name in OWNED_DIRS:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    marker.write_text(
        "This folder is written by `medsweep report`; it rewrites figures/ and "
        "per_config/ here on each run.\n"
    )


def _run_file_name(run: str) -> str:
    return "run" if run in {"", "."} else _UNSAFE.sub("_", run.replace("/", "__")).strip("._")


def _draw_figures(report: Report) -> dict[str, list[Path]]:
    """Draw the training curves of each run and the fold-score plot; return them by config."""
    from medsweep.report.plots import plot_fold_scores, plot_history

    figures_dir = report.out_dir / "figures"
    drawn: dict[str, list[Path]] = {}
    for _, row in report.runs.iterrows():
        if not isinstance(row["history"], str):
            continue
        where = f"fold {int(row['fold'])}" if not pd.isna(row["fold"]) else f"run {row['run']}"
        title = f"{label_of(row['config_key'], report.labels)} — {where}"
        if row["status"] != "ok":
            title += f" ({row['status']})"
        try:
            path = plot_history(
                row["history"],
                figures_dir / "curves" / f"{_run_file_name(row['run'])}.png",
                monitor=row["monitor"] if isinstance(row["monitor"], str) else None,
                best_epoch=None if pd.isna(row["best_epoch"]) else int(row["best_epoch"]),
                title=title,
            )
        except (OSError, ValueError, pd.errors.ParserError) as err:
            log.warning("%s: training curves not drawn (%s)", row["history"], err)
            continue
        if path is not None:
            drawn.setdefault(row["config_key"], []).append(path)
    if report.metric:
        order = report.summary["config_key"].tolist()
        name = _UNSAFE.sub("_", report.metric.replace("/", "_"))
        path = plot_fold_scores(
            report.runs,
            report.metric,
            figures_dir / f"fold_scores_{name}.png",
            order=order,
            baseline=report.baseline,
            labels=report.labels,
        )
        if path is not None:
            report.files["fold_scores"] = path
    return drawn


def _missing_lines(report: Report) -> list[str]:
    return [
        f"{label_of(k, report.labels)}: no ok run for fold {', '.join(map(str, v))}"
        for k, v in report.missing.items()
        if v
    ]


def _stats_for_metric(report: Report, metric: str) -> pd.DataFrame:
    return report.stats[report.stats["metric"] == metric]


def _header_lines(report: Report) -> list[str]:
    runs = report.runs
    n_ok = int((runs["status"] == "ok").sum())
    direction = "higher is better" if report.higher_is_better else "lower is better"
    lines = [
        f"Runs folder: {report.root.resolve()}",
        f"Runs: {len(runs)} ({n_ok} ok, {len(runs) - n_ok} failed) in "
        f"{runs['config_key'].nunique()} configurations",
        f"Sorted by: {report.metric or '—'} ({direction})",
        f"Baseline: {label_of(report.baseline, report.labels) if report.baseline is not None else '—'}",
        f"Created: {datetime.now().isoformat(timespec='seconds')}",
    ]
    if report.common:
        lines.insert(3, f"Common to all configurations: {report.common}")
    return lines


# Sections: each a list of page blocks (report.page), composed into the pages below.


def _lead_blocks(report: Report) -> list:
    """The headline: the best configuration on the chosen metric and its gain over the baseline."""
    text = report.summary_text
    if not report.metric or not len(text) or report.metric not in text:
        return []
    best = text.iloc[0]
    if best[report.metric] == DASH:
        return []
    line = f"Best on {report.metric}: {best['Configuration']} — {best[report.metric]}"
    delta = best.get("Δ vs baseline (95% CI)")
    if delta == "baseline":
        line += " (the baseline)"
    elif isinstance(delta, str) and delta != DASH:
        line += f"; Δ vs baseline {delta}"
    return [Text(line, "lead")]


def _summary_blocks(report: Report) -> list:
    """The ranked summary table, with the fold-score figure above it."""
    blocks: list = [Heading("Summary", anchor="summary")]
    if "fold_scores" in report.files:
        rel = report.files["fold_scores"].relative_to(report.out_dir).as_posix()
        blocks.append(Figure(rel, f"{report.metric} per fold"))
    blocks.append(Text("Cells are mean ± std (ddof=1) over ok folds."))
    blocks.append(Table(report.summary_text))
    return blocks


def _stats_tables(report: Report) -> list[tuple[str, Table]]:
    """The baseline comparison of each metric, the chosen metric first."""
    ordered = [report.metric] + [m for m in report.metrics if m != report.metric]
    out = []
    for metric in ordered:
        rows = _stats_for_metric(report, metric)
        if len(rows):
            out.append((metric, Table(stats_display(rows, labels=report.labels))))
    return out


def _stats_blocks(report: Report) -> list:
    """Every metric's comparison with the baseline, the chosen one open."""
    tables = _stats_tables(report)
    if not tables:
        return []
    blocks: list = [
        Heading("Comparison with the baseline", anchor="stats"),
        Text(STATS_METHOD, "meta"),
    ]
    blocks += [Details(m, [t], open=i == 0) for i, (m, t) in enumerate(tables)]
    return blocks


def _paired_blocks(report: Report) -> list:
    """The paired test-set comparisons section (DeLong, McNemar)."""
    if report.paired is None or not len(report.paired):
        return []
    return [
        Heading("Paired test-set comparisons with the baseline", anchor="paired"),
        Text(PAIRED_METHOD, "meta"),
        Table(paired_display(report.paired, report.labels)),
    ]


def _eval_link_blocks(report: Report) -> list:
    """Links to each configuration's evaluation pages (written by ``medsweep evaluate``)."""
    links = report.eval_links
    if links is None or not len(links):
        return []
    blocks: list = [Heading("Evaluations", anchor="evaluations")]
    for _, row in links.iterrows():
        label = f"{label_of(row['config_key'], report.labels)} — {row['what']}"
        blocks.append(Link(row["href"], label))
    return blocks


def _missing_blocks(report: Report) -> list:
    lines = _missing_lines(report)
    body = [Text(line, "note") for line in lines] or [Text("None.")]
    return [Heading("Missing folds", anchor="missing"), *body]


def _failed_blocks(failed: pd.DataFrame, level: int = 2) -> list:
    body = Table(failed, css="failed") if len(failed) else Text("None.")
    return [Heading("Failed runs", level, anchor="failed" if level == 2 else ""), body]


def _config_names(report: Report) -> dict[str, str]:
    """A file-system-safe name per configuration (per_config/ files and HTML anchors)."""
    keys = list(report.per_config)
    by_label = safe_names([label_of(k, report.labels) for k in keys])
    return {k: by_label[label_of(k, report.labels)] for k in keys}


def _config_body(report: Report, key: str, curves: dict[str, list[Path]], prefix: str) -> list:
    """One configuration: its runs, fold table and training curves (paths from ``prefix``)."""
    group = report.runs[report.runs["config_key"] == key]
    n_ok = int((group["status"] == "ok").sum())
    blocks: list = [
        Text(f"Key: {key}", "meta"),
        Text(f"Runs: {len(group)} ({n_ok} ok, {len(group) - n_ok} failed)", "meta"),
    ]
    if report.missing.get(key):
        blocks.append(Text("Missing folds: " + ", ".join(map(str, report.missing[key])), "note"))
    blocks.append(Table(report.per_config[key], index=True))
    if key in curves:
        figures = [
            Figure(prefix + p.relative_to(report.out_dir).as_posix(), p.stem) for p in curves[key]
        ]
        blocks.append(Details(f"Training curves ({len(figures)} runs)", figures))
    return blocks


def _configs_blocks(report: Report, curves: dict[str, list[Path]]) -> list:
    names = _config_names(report)
    blocks: list = [Heading("Configurations", anchor="configs")]
    for key in report.per_config:
        label = label_of(key, report.labels)
        blocks.append(Heading(label, 3, anchor=f"config-{names[key]}"))
        blocks += _config_body(report, key, curves, prefix="")
    return blocks


# Pages: the full report (report.md and report.html) and the short Markdown pages beside it.


def _title(report: Report) -> str:
    return f"Sweep report: {report.root.resolve().name}"


def report_page(report: Report, curves: dict[str, list[Path]], meta: list[str]) -> Page:
    """The whole report as one page model, rendered to report.md and report.html."""
    blocks = [
        *_lead_blocks(report),
        *_summary_blocks(report),
        *_stats_blocks(report),
        *_paired_blocks(report),
        *_eval_link_blocks(report),
        *_missing_blocks(report),
        *_failed_blocks(report.failed),
        *_configs_blocks(report, curves),
    ]
    return Page(_title(report), meta, blocks)


def summary_page(report: Report, meta: list[str]) -> Page:
    """summary.md: the ranking, the chosen metric's comparison and what went wrong."""
    blocks = [*_lead_blocks(report), *_summary_blocks(report)]
    tables = _stats_tables(report)
    if report.metric and tables and tables[0][0] == report.metric:
        blocks += [
            Heading(f"Comparison with the baseline on {report.metric}", anchor="stats"),
            tables[0][1],
            Text("See stats.md for every metric and the method."),
        ]
    blocks += [
        *_paired_blocks(report),
        *_eval_link_blocks(report),
        *_missing_blocks(report),
        *_failed_blocks(report.failed),
    ]
    return Page(_title(report), meta, blocks)


def stats_page(report: Report, meta: list[str]) -> Page:
    """stats.md: the method and every metric's comparison with the baseline."""
    blocks: list = [Text(STATS_METHOD)]
    tables = _stats_tables(report)
    for metric, table in tables:
        blocks += [Heading(metric), table]
    if not tables:
        blocks.append(Text("No comparison: fewer than two configurations."))
    blocks += [*_missing_blocks(report), *_failed_blocks(report.failed)]
    return Page(f"Comparison with the baseline: {report.root.resolve().name}", meta, blocks)


def config_page(report: Report, key: str, curves: dict[str, list[Path]]) -> Page:
    """per_config/<name>.md: one configuration with its failed runs."""
    group = report.runs[report.runs["config_key"] == key]
    failed = report.failed[report.failed["run"].isin(group["run"])]
    blocks = _config_body(report, key, curves, prefix="../") + _failed_blocks(failed)
    return Page(f"Configuration: {label_of(key, report.labels)}", [], blocks)


def _write_pages(report: Report, curves: dict[str, list[Path]]) -> None:
    """Render every page of the report with the one renderer (report.page)."""
    out = report.out_dir
    meta = _header_lines(report)
    written = write_page(report_page(report, curves, meta), out / "report")
    report.files["html"], report.files["md"] = written["html"], written["md"]
    for name, page in (
        ("summary", summary_page(report, meta)),
        ("stats", stats_page(report, meta)),
    ):
        report.files[f"{name}_md"] = out / f"{name}.md"
        report.files[f"{name}_md"].write_text(render_markdown(page))
    per_config_dir = out / "per_config"
    per_config_dir.mkdir(exist_ok=True)
    names = _config_names(report)
    for key in report.per_config:
        path = per_config_dir / f"{names[key]}.md"
        path.write_text(render_markdown(config_page(report, key, curves)))
        report.files[f"per_config:{key}"] = path


def _write_csv(report: Report) -> None:
    out = report.out_dir
    report.files["folds_csv"] = out / "folds.csv"
    report.runs.to_csv(report.files["folds_csv"], index=False)
    report.files["summary_csv"] = out / "summary.csv"
    report.summary.to_csv(report.files["summary_csv"], index=False, float_format="%.10g")
    report.files["stats_csv"] = out / "stats.csv"
    report.stats.to_csv(report.files["stats_csv"], index=False, float_format="%.10g")
    if report.paired is not None and len(report.paired):
        report.files["paired_csv"] = out / "paired.csv"
        report.paired.to_csv(report.files["paired_csv"], index=False, float_format="%.10g")


def _write_meta(report: Report) -> None:
    runs = report.runs
    meta = {
        "root": str(report.root.resolve()),
        "metric": report.metric,
        "higher_is_better": report.higher_is_better,
        "baseline": report.baseline,
        "metrics": report.metrics,
        "n_runs": len(runs),
        "n_ok": int((runs["status"] == "ok").sum()),
        "n_failed": int((runs["status"] != "ok").sum()),
        "configs": runs["config_key"].drop_duplicates().tolist(),
        "labels": report.labels,
        "common_overrides": report.common,
        "files": {k: v.relative_to(report.out_dir).as_posix() for k, v in report.files.items()},
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    report.files["meta"] = report.out_dir / "report.json"
    report.files["meta"].write_text(json.dumps(meta, indent=2) + "\n")


def _log_wandb(report: Report) -> None:
    from medsweep.report.wandb_log import log_tables_to_wandb
    from medsweep.results import read_metrics
    from medsweep.tracking import report_run_settings

    projects = Counter(p for p in report.runs["wandb_project"].dropna() if p)
    if not projects:
        return
    project = projects.most_common(1)[0][0]
    tables = {"summary": report.summary}
    if len(report.stats):
        tables["stats"] = report.stats
    if report.paired is not None and len(report.paired):
        tables["paired"] = report.paired
    # the report sits in the sweep's own job type, beside its runs, as one "report" run
    records = [
        read_metrics(d) for d in report.runs["run_dir"] if (Path(d) / "metrics.json").is_file()
    ]
    settings = report_run_settings(records, report.root)
    best = report.summary.iloc[0] if len(report.summary) and report.metric else None
    summary = {}
    if best is not None:
        summary = {
            "best_config": best["config"],
            f"best/{report.metric}": best[f"{report.metric}_mean"],
        }
    report.wandb_dir = log_tables_to_wandb(
        tables,
        project=project,
        out_dir=report.out_dir,
        name=settings["name"],
        job_type=settings["job_type"],
        group=settings["group"],
        config={
            "root": str(report.root.resolve()),
            "metric": report.metric,
            "baseline": report.baseline,
        },
        summary=summary,
    )


def build_report(
    root: str | Path,
    *,
    metric: str | None = None,
    baseline: str | None = None,
    out: str | Path | None = None,
    figures: bool = True,
    wandb: bool = True,
    digits: int = 3,
    allow_mixed: bool = False,
) -> Report:
    """Build the report of the runs under ``root`` and write it to ``out`` (default root/report).

    ``metric`` ranks the configurations (default val/auroc, else the first available);
    ``baseline`` is a configuration key or an override subset naming one configuration.
    Runs of different tasks, datasets or class lists are refused unless ``allow_mixed``.
    """
    root = Path(root)
    out_dir = Path(out) if out is not None else root / REPORT_DIRNAME
    if not root.is_dir():
        raise ReportError(
            f"folder not found: {root}" if not root.exists() else f"not a folder: {root}"
        )
    _check_out_dir(root, out_dir)
    runs = collect_runs(root, exclude=[out_dir])
    if not allow_mixed:
        check_comparable(runs)
    metric = resolve_metric(runs, metric)
    metrics = metric_columns(runs, headline_only=True)
    if metric and metric not in metrics:
        metrics.append(metric)
    configs = config_order(runs)
    baseline_key = resolve_baseline(configs, baseline)
    if baseline_key is not None and len(configs) > 1:
        stats = compare_to_baseline(runs, baseline_key, metrics, configs)
    else:
        stats = pd.DataFrame(columns=STATS_COLUMNS)
    labels = config_labels(configs)
    summary = summary_table(runs, metrics, sort_by=metric, stats=stats, labels=labels)
    missing = {key: missing_folds(runs[runs["config_key"] == key]) for key in configs}
    notes = dict(zip(summary["config_key"], summary["notes"], strict=True))
    stats["notes"] = stats["config_key"].map(notes).fillna("")
    report = Report(
        root=root,
        out_dir=out_dir,
        runs=runs,
        metric=metric,
        metrics=metrics,
        baseline=baseline_key,
        summary=summary,
        summary_text=summary_display(summary, metrics, baseline_key, digits),
        stats=stats,
        per_config={key: per_fold_table(runs, key, metrics) for key in summary["config_key"]},
        failed=failed_runs_table(runs, labels),
        missing=missing,
        labels=labels,
        common=common_overrides(configs),
    )
    if baseline_key is not None and len(configs) > 1:
        report.paired = paired_comparisons(runs, baseline_key, configs)
    report.eval_links = evaluation_links(root, runs, out_dir)
    _prepare_out_dir(out_dir)
    curves = _draw_figures(report) if figures else {}
    _write_csv(report)
    _write_pages(report, curves)
    if wandb:
        _log_wandb(report)
        if report.wandb_dir is not None:
            report.files["wandb"] = report.wandb_dir
    _write_meta(report)
    return report
