"""Statistics of fold scores: mean/std and paired comparisons against a baseline configuration."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

NAN = float("nan")
# Differences closer than this are treated as equal (fold scores are rounded floats).
TOLERANCE = 1e-12

STATS_COLUMNS = [
    "config_key",
    "baseline",
    "metric",
    "n_pairs",
    "folds",
    "baseline_mean",
    "config_mean",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "t",
    "df",
    "p_value",
    "p_wilcoxon",
    "significant",
    "ratio",
    "ratio_source",
]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (ddof=1) of the finite values."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return NAN, NAN
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if array.size > 1 else NAN
    return mean, std


@dataclass(frozen=True)
class PairedTest:
    """Result of the corrected resampled t-test on paired differences."""

    n: int
    mean_diff: float
    std_diff: float
    ratio: float
    se: float
    t: float
    df: int
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool


def corrected_resampled_ttest(
    differences: Sequence[float], ratio: float | None = None, confidence: float = 0.95
) -> PairedTest:
    """Corrected resampled t-test (Nadeau & Bengio 2003) on k paired fold differences.

    The variance of the mean difference is ``(1/k + ratio) * s^2`` with ``s^2`` the sample
    variance (ddof=1) and ``ratio = n_eval / n_train``; ``ratio`` defaults to ``1/(k-1)``
    (k-fold cross-validation). Fewer than two differences give nan statistics.
    """
    d = np.asarray([x for x in differences if math.isfinite(x)], dtype=float)
    k = int(d.size)
    if k < 2:
        mean = float(d.mean()) if k else NAN
        return PairedTest(k, mean, NAN, NAN, NAN, NAN, max(k - 1, 0), NAN, NAN, NAN, False)
    if ratio is None or not math.isfinite(ratio) or ratio < 0:
        ratio = 1.0 / (k - 1)
    mean = float(d.mean())
    var = float(d.var(ddof=1)) if np.ptp(d) > TOLERANCE else 0.0
    if abs(mean) <= TOLERANCE:
        mean = 0.0
    se = math.sqrt((1.0 / k + ratio) * var)
    df = k - 1
    t_crit = float(sps.t.ppf(0.5 + confidence / 2.0, df))
    if se > 0:
        t = mean / se
        p_value = float(2.0 * sps.t.sf(abs(t), df))
    elif mean != 0:
        # Every fold moved by the same amount: no spread, so t is unbounded.
        t, p_value = math.copysign(math.inf, mean), 0.0
    else:
        t, p_value = NAN, NAN
    ci_low, ci_high = mean - t_crit * se, mean + t_crit * se
    significant = bool(ci_low > 0 or ci_high < 0)
    return PairedTest(
        k, mean, math.sqrt(var), ratio, se, t, df, ci_low, ci_high, p_value, significant
    )


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; nan with < 2 non-zero or all-identical differences."""
    d = np.asarray([x for x in differences if math.isfinite(x)], dtype=float)
    if np.count_nonzero(np.abs(d) > TOLERANCE) < 2 or np.ptp(d) <= TOLERANCE:
        return NAN
    d = np.where(np.abs(d) > TOLERANCE, d, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.wilcoxon(d).pvalue)


def _pair_key_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Pair by fold when each side has one run per fold, else by (fold, seed)."""
    folds = (a["fold"], b["fold"])
    if all(f.notna().all() and not f.duplicated().any() for f in folds):
        return ["fold"]
    return ["fold", "seed"]


def _eval_ratio(pairs: pd.DataFrame, metric: str) -> tuple[float | None, str]:
    """Mean n_eval/n_train of the paired runs, the eval part being the metric's split."""
    split = metric.split("/", 1)[0]
    eval_column = {"val": "n_val", "test": "n_test"}.get(split)
    ratios = []
    for side in ("_base", "_cfg"):
        column = f"{eval_column}{side}"
        if eval_column is None or column not in pairs:
            continue
        n_eval = pd.to_numeric(pairs[column], errors="coerce").astype(float)
        n_train = pd.to_numeric(pairs[f"n_train{side}"], errors="coerce").astype(float)
        ratio = (n_eval / n_train).replace([np.inf, -np.inf], np.nan)
        ratios += [r for r in ratio if math.isfinite(r) and r > 0]
    if ratios and len(ratios) == 2 * len(pairs):
        return float(np.mean(ratios)), "sizes"
    return None, "1/(k-1)"


def paired_comparison(
    runs: pd.DataFrame, config_key: str, baseline: str, metric: str, confidence: float = 0.95
) -> dict[str, object]:
    """Compare one configuration with the baseline on ``metric``, paired by fold."""
    ok = runs[runs["status"] == "ok"]
    columns = ["fold", "seed", "n_train", "n_val", "n_test", metric]
    base = ok.loc[ok["config_key"] == baseline, columns].dropna(subset=[metric])
    cfg = ok.loc[ok["config_key"] == config_key, columns].dropna(subset=[metric])
    keys = _pair_key_columns(base, cfg)
    pairs = base.merge(cfg, on=keys, suffixes=("_base", "_cfg")).sort_values(keys)
    diffs = (pairs[f"{metric}_cfg"] - pairs[f"{metric}_base"]).astype(float).tolist()
    ratio, source = _eval_ratio(pairs, metric)
    test = corrected_resampled_ttest(diffs, ratio=ratio, confidence=confidence)
    if test.n < 2:
        source = ""
    folds = ",".join("" if pd.isna(f) else str(int(f)) for f in pairs["fold"])
    result = asdict(test)
    return {
        "config_key": config_key,
        "baseline": baseline,
        "metric": metric,
        "n_pairs": test.n,
        "folds": folds,
        "baseline_mean": float(pairs[f"{metric}_base"].mean()) if len(pairs) else NAN,
        "config_mean": float(pairs[f"{metric}_cfg"].mean()) if len(pairs) else NAN,
        "mean_diff": result["mean_diff"],
        "std_diff": result["std_diff"],
        "ci_low": result["ci_low"],
        "ci_high": result["ci_high"],
        "t": result["t"],
        "df": result["df"],
        "p_value": result["p_value"],
        "p_wilcoxon": wilcoxon_p(diffs),
        "significant": result["significant"],
        "ratio": result["ratio"],
        "ratio_source": source,
    }


def compare_to_baseline(
    runs: pd.DataFrame,
    baseline: str,
    metrics: Sequence[str],
    configs: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Compare every configuration with ``baseline`` on each metric (one row per pair)."""
    if configs is None:
        configs = list(dict.fromkeys(runs["config_key"]))
    rows = [
        paired_comparison(runs, key, baseline, metric, confidence)
        for metric in metrics
        for key in configs
        if key != baseline
    ]
    return pd.DataFrame(rows, columns=STATS_COLUMNS)
