"""Paired test-set comparisons of configurations: DeLong (AUROC) and McNemar (accuracy) on the
same test samples, for fold ensembles and fold by fold."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medsweep.report.configs import label_of

log = logging.getLogger(__name__)

PAIRED_METHOD = (
    "Configuration against the baseline on the same test samples (fold runs share one held-out "
    "test set). AUROC: DeLong's test for binary tasks — two AUROCs measured on the same samples "
    "are correlated and DeLong's covariance accounts for it; for multiclass and multilabel the "
    "macro AUROC has no DeLong variance, so a paired stratified bootstrap (1000 resamples) gives "
    "the CI and a two-sided p (counted as (k + 1) / (n + 1): never below 0.002). Accuracy: McNemar's test on the samples exactly one of the two "
    "gets right (exact binomial below 25 such samples, else chi-square with continuity "
    "correction); multilabel samples count as right when every label is. Ensemble: the folds' "
    "averaged probabilities. Unlike the fold-level t-test above, these tests treat the test "
    "samples as the random quantity and the trained models as fixed."
)

PAIRED_COLUMNS = [
    "config_key",
    "baseline",
    "scope",
    "n",
    "auroc_config",
    "auroc_baseline",
    "auroc_diff",
    "auroc_ci_low",
    "auroc_ci_high",
    "auroc_p",
    "auroc_test",
    "acc_config",
    "acc_baseline",
    "acc_diff",
    "only_config_right",
    "only_baseline_right",
    "acc_p",
    "acc_test",
]


def _load(run_dirs: Sequence[str]) -> dict[int, object]:
    from medsweep.evaluation.data import load_run

    out = {}
    for run_dir in run_dirs:
        try:
            data = load_run(Path(run_dir))
        except (OSError, ValueError) as err:
            log.info("%s: no paired comparison (%s)", run_dir, err)
            continue
        if data.test is not None:
            out[int(data.record.get("fold") or 0)] = data
    return out


def _row(key, baseline, scope, a, b, task, n_boot, seed) -> dict:
    from medsweep.evaluation.comparisons import compare_on_test
    from medsweep.evaluation.data import common_test_order

    order_a, order_b = common_test_order([a, b])
    a, b = a.take(order_a), b.take(order_b)
    out = compare_on_test(a.targets, a.probs, b.probs, task, n_boot=n_boot, seed=seed)
    renamed = {
        k.replace("_a", "_config", 1).replace("_b", "_baseline", 1)
        if k in ("auroc_a", "auroc_b", "acc_a", "acc_b")
        else k: v
        for k, v in out.items()
    }
    renamed["only_config_right"] = renamed.pop("only_a_right")
    renamed["only_baseline_right"] = renamed.pop("only_b_right")
    return {"config_key": key, "baseline": baseline, "scope": scope, **renamed}


def paired_comparisons(
    runs: pd.DataFrame,
    baseline: str,
    configs: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per configuration and scope (fold ensemble, each shared fold) against ``baseline``.

    Runs without predictions, or whose test samples differ from the baseline's, are left out.
    """
    from medsweep.evaluation.ensemble import fold_ensemble

    ok = runs[runs["status"] == "ok"]
    loaded = {key: _load(ok.loc[ok["config_key"] == key, "run_dir"].tolist()) for key in configs}
    base = loaded.get(baseline) or {}
    rows = []
    if not base:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    for key in configs:
        if key == baseline or not loaded.get(key):
            continue
        mine = loaded[key]
        try:
            pairs = []
            if len(mine) > 1 or len(base) > 1:
                ens_a, _ = fold_ensemble(list(mine.values()))
                ens_b, _ = fold_ensemble(list(base.values()))
                pairs.append((f"fold ensemble ({len(mine)} vs {len(base)})", ens_a, ens_b))
            for fold in sorted(set(mine) & set(base)):
                pairs.append((f"fold {fold}", mine[fold], base[fold]))
            for scope, a, b in pairs:
                if a.task != b.task or a.classes != b.classes:
                    raise ValueError("different tasks or classes")
                rows.append(_row(key, baseline, scope, a.test, b.test, a.task, n_boot, seed))
        except ValueError as err:
            log.warning("%s vs %s: no paired test-set comparison (%s)", key, baseline, err)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_display(paired: pd.DataFrame, labels=None) -> pd.DataFrame:
    """The paired comparisons as a compact display table."""
    return pd.DataFrame(
        {
            "configuration": [label_of(k, labels) for k in paired["config_key"]],
            "scope": paired["scope"],
            "n test": paired["n"],
            "AUROC": paired["auroc_config"],
            "AUROC base": paired["auroc_baseline"],
            "Δ AUROC": paired["auroc_diff"],
            "95% CI": [
                f"[{lo:+.3f}, {hi:+.3f}]"
                for lo, hi in zip(paired["auroc_ci_low"], paired["auroc_ci_high"])
            ],
            "p (AUROC)": paired["auroc_p"],
            "AUROC test": paired["auroc_test"],
            "Δ acc": paired["acc_diff"],
            "only config / base right": [
                f"{a} / {b}"
                for a, b in zip(paired["only_config_right"], paired["only_baseline_right"])
            ],
            "p (McNemar)": paired["acc_p"],
        }
    )


def evaluation_links(root: Path, runs: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """Links (relative to ``out_dir``) to each configuration's evaluation pages, where they exist."""
    import json
    import os

    rows = []
    eval_root = root / "eval"
    if eval_root.is_dir():
        for summary in sorted(eval_root.glob("*/summary.json")):
            data = json.loads(summary.read_text())
            rows.append(
                {
                    "config_key": data.get("name", ""),
                    "what": data.get("kind", "ensemble"),
                    "href": os.path.relpath(summary.parent / "index.html", out_dir),
                }
            )
    for _, run in runs[runs["status"] == "ok"].iterrows():
        page = Path(run["run_dir"]) / "eval" / "index.html"
        if page.is_file():
            fold = run["fold"]
            rows.append(
                {
                    "config_key": run["config_key"],
                    "what": "run" if pd.isna(fold) else f"fold {int(fold)}",
                    "href": os.path.relpath(page, out_dir),
                }
            )
    return pd.DataFrame(rows, columns=["config_key", "what", "href"])
