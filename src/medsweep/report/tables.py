"""Per-fold and summary tables of a sweep, and their display text (mean ± std, differences)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from medsweep.report.collect import config_order, higher_is_better
from medsweep.report.configs import label_of
from medsweep.report.stats import mean_std

DASH = "—"


def format_number(value: object, digits: int = 3) -> str:
    """Format a number with fixed decimals; missing values become a dash."""
    if value is None or isinstance(value, str):
        return DASH if value in (None, "") else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return DASH
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """Format ``mean ± std``; only the mean when the std is undefined (a single fold)."""
    if mean is None or math.isnan(mean):
        return DASH
    if std is None or math.isnan(std):
        return format_number(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_p(value: float) -> str:
    """Format a p-value with three significant digits."""
    if value is None or math.isnan(value):
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def format_signed(value: float, digits: int = 3) -> str:
    """Format a difference with its sign; values that round to zero read ``+0.000``."""
    if value is None or math.isnan(value):
        return DASH
    if abs(value) < 0.5 * 10**-digits:
        value = 0.0
    return f"{value:+.{digits}f}"


def format_diff_ci(row: pd.Series, digits: int = 3) -> str:
    """Format a comparison as ``+0.012 [-0.003, +0.027]``, with ``*`` when significant."""
    if math.isnan(row["mean_diff"]):
        return DASH
    text = format_signed(row["mean_diff"], digits)
    if not math.isnan(row["ci_low"]):
        low, high = format_signed(row["ci_low"], digits), format_signed(row["ci_high"], digits)
        text += f" [{low}, {high}]"
    return text + (" *" if row["significant"] else "")


def _fold_label(fold: object, seed: object, repeated: bool) -> str:
    label = "Run" if pd.isna(fold) else f"Fold {int(fold)}"
    if repeated and not pd.isna(seed):
        label += f" (seed {int(seed)})"
    return label


def per_fold_table(runs: pd.DataFrame, config_key: str, metrics: Sequence[str]) -> pd.DataFrame:
    """Return the fold scores of one configuration: rows Fold 0..k-1, then Mean and Std."""
    ok = runs[(runs["config_key"] == config_key) & (runs["status"] == "ok")]
    ok = ok.sort_values(["fold", "seed"], na_position="last")
    repeated = ok["fold"].isna().any() or ok["fold"].duplicated().any()
    labels = [_fold_label(f, s, repeated) for f, s in zip(ok["fold"], ok["seed"], strict=True)]
    table = pd.DataFrame(
        {m: ok[m].to_numpy(dtype=float) if m in ok else math.nan for m in metrics}, index=labels
    )
    stats = {m: mean_std(table[m].tolist()) for m in metrics}
    table.loc["Mean"] = [stats[m][0] for m in metrics]
    table.loc["Std"] = [stats[m][1] for m in metrics]
    table.index.name = "fold"
    return table


def missing_folds(group: pd.DataFrame) -> list[int]:
    """Return the fold indices a configuration lacks an ok run for (from n_folds or gaps)."""
    ok_folds = {int(f) for f in group.loc[group["status"] == "ok", "fold"].dropna()}
    all_folds = {int(f) for f in group["fold"].dropna()}
    n_folds = group["n_folds"].dropna()
    if len(n_folds):
        expected = set(range(int(n_folds.max())))
    elif all_folds:
        expected = set(range(max(all_folds) + 1))
    else:
        return []
    return sorted(expected - ok_folds)


def _failed_text(group: pd.DataFrame) -> str:
    failed = group[group["status"] != "ok"]
    parts = []
    for _, row in failed.iterrows():
        where = f"fold {int(row['fold'])}" if not pd.isna(row["fold"]) else f"run {row['run']}"
        error = row["error"] if isinstance(row["error"], str) and row["error"] else row["status"]
        parts.append(f"{where}: {error}")
    return "; ".join(parts)


def summary_table(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    sort_by: str | None = None,
    stats: pd.DataFrame | None = None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Return one row per configuration with mean/std per metric, fold counts and flags.

    Rows are sorted by ``sort_by`` (best first); configurations without a score go last.
    """
    rows = []
    for key in config_order(runs):
        group = runs[runs["config_key"] == key]
        ok = group[group["status"] == "ok"]
        n_folds = group["n_folds"].dropna()
        missing = missing_folds(group)
        n_failed = int((group["status"] != "ok").sum())
        notes = []
        if missing:
            notes.append("missing folds " + ", ".join(map(str, missing)))
        if n_failed:
            notes.append(f"{n_failed} failed")
        row: dict[str, object] = {
            "config_key": key,
            "config": label_of(key, labels),
            "n_ok": len(ok),
            "n_failed": n_failed,
            "n_folds": int(n_folds.max()) if len(n_folds) else None,
            "missing_folds": ",".join(map(str, missing)),
            "notes": "; ".join(notes),
            "failed_runs": _failed_text(group),
        }
        for metric in metrics:
            values = ok[metric].tolist() if metric in ok else []
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(values)
        rows.append(row)
    summary = pd.DataFrame(rows)
    if sort_by and f"{sort_by}_mean" in summary:
        ascending = not higher_is_better(sort_by, runs)
        summary = summary.sort_values(
            f"{sort_by}_mean", ascending=ascending, na_position="last", kind="stable"
        )
    if stats is not None and sort_by and len(stats):
        chosen = stats[stats["metric"] == sort_by].set_index("config_key")
        for column in ("mean_diff", "ci_low", "ci_high", "p_value", "p_wilcoxon", "significant"):
            summary[f"vs_baseline_{column}"] = summary["config_key"].map(chosen[column])
    return summary.reset_index(drop=True)


def summary_display(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    baseline: str | None = None,
    digits: int = 3,
) -> pd.DataFrame:
    """Turn the numeric summary into display strings (``mean ± std`` cells)."""
    table = pd.DataFrame({"Configuration": summary["config"]})
    for metric in metrics:
        table[metric] = [
            format_mean_std(m, s, digits)
            for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], strict=True)
        ]
    if "vs_baseline_mean_diff" in summary:
        diffs = []
        for _, row in summary.iterrows():
            if baseline is not None and row["config_key"] == baseline:
                diffs.append("baseline")
                continue
            values = {
                c: row.get(f"vs_baseline_{c}", math.nan)
                for c in ("mean_diff", "ci_low", "ci_high", "significant")
            }
            values = {k: (math.nan if v is None else v) for k, v in values.items()}
            values["significant"] = bool(values["significant"] is True)
            diffs.append(format_diff_ci(pd.Series(values), digits))
        table["Δ vs baseline (95% CI)"] = diffs
    n_folds = [
        f"{ok}/{n}" if n is not None and not pd.isna(n) else str(ok)
        for ok, n in zip(summary["n_ok"], summary["n_folds"], strict=True)
    ]
    table["ok folds"] = n_folds
    table["failed"] = summary["n_failed"].astype(int)
    table["notes"] = summary["notes"]
    return table


def failed_runs_table(runs: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the failed runs with their configuration, fold, seed and error."""
    failed = runs[runs["status"] != "ok"]
    return pd.DataFrame(
        {
            "run": failed["run"],
            "configuration": [label_of(k, labels) for k in failed["config_key"]],
            "fold": [DASH if pd.isna(f) else str(int(f)) for f in failed["fold"]],
            "seed": [DASH if pd.isna(s) else str(int(s)) for s in failed["seed"]],
            "status": failed["status"],
            "error": failed["error"].fillna(""),
        }
    ).reset_index(drop=True)


def stats_display(
    stats: pd.DataFrame, digits: int = 3, labels: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Turn the comparison table into display strings."""
    return pd.DataFrame(
        {
            "metric": stats["metric"],
            "configuration": [label_of(k, labels) for k in stats["config_key"]],
            "baseline": [label_of(k, labels) for k in stats["baseline"]],
            "paired folds": stats["n_pairs"].astype(int),
            "baseline mean": stats["baseline_mean"].map(lambda v: format_number(v, digits)),
            "config mean": stats["config_mean"].map(lambda v: format_number(v, digits)),
            "Δ mean": [format_signed(v, digits) for v in stats["mean_diff"]],
            "95% CI": [
                DASH
                if math.isnan(lo)
                else f"[{format_signed(lo, digits)}, {format_signed(hi, digits)}]"
                for lo, hi in zip(stats["ci_low"], stats["ci_high"], strict=True)
            ],
            "p (corrected t)": stats["p_value"].map(format_p),
            "p (Wilcoxon)": stats["p_wilcoxon"].map(format_p),
            "significant": stats["significant"].map(lambda s: "yes" if s else "no"),
        }
    ).reset_index(drop=True)


def to_markdown(table: pd.DataFrame, index: bool = False, digits: int = 3) -> str:
    """Render a DataFrame as a GitHub-flavoured Markdown table (floats with ``digits``
    significant digits), as every page medsweep writes renders it."""
    from medsweep.report.page import Table, blocks_markdown

    return blocks_markdown([Table(table, index=index, digits=digits)])
