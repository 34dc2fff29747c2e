"""The model card of a run or fold ensemble, built from its files: metrics.json, config.yaml and,
when ``medsweep evaluate`` ran, eval/ (test CIs, calibration, thresholds)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from medsweep.results import CONFIG_FILE

# metrics shown first, in this order; others follow as they come
ORDER = ("auroc", "acc", "balanced_acc", "f1", "f1_macro", "precision", "recall", "specificity")


@dataclass
class ModelCard:
    """What the app shows about a model: facts, a metrics table and the decision settings."""

    title: str
    facts: dict[str, str]
    metrics: pd.DataFrame
    calibration: dict[str, str]
    threshold: dict[str, str]
    notes: list[str] = field(default_factory=list)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _model_name(cfg) -> str:
    model = cfg.get("model") or {}
    name = (
        model.get("name") or model.get("backbone") or str(model.get("_target_", "?")).split(".")[-1]
    )
    return str(name) + (" (ImageNet-pretrained start)" if model.get("pretrained") else "")


def _ordered(names) -> list[str]:
    names = [n for n in dict.fromkeys(names) if n != "loss" and "/" not in n]
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def metrics_table(
    records: list[dict], summary: dict | None, confidence: float | None
) -> pd.DataFrame:
    """Rows per metric: validation (the run's, or mean ± SD over folds), test (with its CI from
    eval/ when there, else the run's or the folds' mean)."""
    ci = (summary or {}).get("test") or {}
    names = _ordered([k for r in records for part in ("val", "test") for k in r.get(part) or {}])
    label = f"test {confidence:.0%} CI" if confidence else "test CI"
    rows = []
    for name in names:
        row = {"metric": name}
        for part in ("val", "test"):
            values = [r[part][name] for r in records if name in (r.get(part) or {})]
            values = [float(v) for v in values if v is not None]
            if not values:
                row[part] = "—"
            elif len(values) == 1:
                row[part] = _fmt(values[0])
            else:
                row[part] = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (folds)"
        if name in ci:
            interval = ci[name]
            row["test"] = _fmt(interval.get("estimate"))
            row[label] = f"[{_fmt(interval.get('ci_low'))}, {_fmt(interval.get('ci_high'))}]"
        else:
            row[label] = "—"
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["metric", "val", "test", label])
    return frame.rename(columns={"val": "validation"})


def _confidence(eval_dir: Path | None) -> float | None:
    if eval_dir is None or not (eval_dir / "tables" / "metrics_ci.csv").is_file():
        return None
    table = pd.read_csv(eval_dir / "tables" / "metrics_ci.csv")
    return float(table["confidence"].iloc[0]) if "confidence" in table and len(table) else None


def model_card(predictor) -> ModelCard:
    """The card of a ``medsweep.predict.Predictor`` (its records, config and eval folder)."""
    choice, records, eval_dir = predictor.choice, predictor.records, predictor.eval_dir
    first = records[0]
    cfg = OmegaConf.load(choice.run_dirs[0] / CONFIG_FILE)
    data = cfg.get("data") or {}
    sizes = first.get("sizes") or {}
    check = first.get("data_check") or {}
    modes = ", ".join(
        f"{m} ({n})" for m, n in ((check.get("images") or {}).get("modes") or {}).items()
    )
    folds = sorted(int(r.get("fold") or 0) for r in records)
    facts = {
        "model": _model_name(cfg),
        "kind": "single run"
        if choice.kind == "run"
        else f"fold ensemble: mean of {len(records)} runs' probabilities (folds {folds})",
        "task": predictor.task,
        "classes": ", ".join(predictor.classes),
        "data": f"{(first.get('data') or {}).get('name', '?')}: "
        f"{(first.get('data') or {}).get('n', '?')} images" + (f" ({modes})" if modes else ""),
        "split": ", ".join(f"{k} {v}" for k, v in sizes.items())
        + (
            f" (fold {first.get('fold')} of {first.get('n_folds')})"
            if first.get("n_folds", 1) > 1 and choice.kind == "run"
            else ""
        ),
        "input": f"{data.get('image_size', '?')} px, {data.get('channels', '?')} channel(s), "
        f"normalisation {data.get('normalization', '?')}",
        "best epoch": ", ".join(str(r.get("best_epoch")) for r in records)
        + f" (monitor {first.get('monitor') or '—'})",
        "runs": ", ".join(str(d) for d in choice.run_dirs),
        "trained": first.get("created") or "—",
    }
    summary = _read_json(eval_dir / "summary.json") if eval_dir else None
    notes = []
    if summary is None:
        notes.append(
            "medsweep evaluate has not run here: no test confidence intervals, calibration or "
            "tuned threshold (decisions at 0.5 / argmax)"
        )
    metrics = metrics_table(records, summary, _confidence(eval_dir))
    calibration = {}
    cal = _read_json(eval_dir / "calibration.json") if eval_dir else None
    if cal:
        before, after = cal.get("test_before") or {}, cal.get("test_after") or {}
        calibration = {
            "temperature (fitted on validation)": _fmt(cal.get("temperature")),
            "test ECE": f"{_fmt(before.get('ece'))} as predicted, "
            f"{_fmt(after.get('ece'))} after temperature scaling",
            "test Brier score": f"{_fmt(before.get('brier'))} as predicted, "
            f"{_fmt(after.get('brier'))} after",
            "shown probabilities": "as the model predicts them (not temperature-scaled)",
        }
    info = predictor.threshold_info
    if info:
        values = ", ".join(f"{c} {v:.4g}" for c, v in predictor.thresholds.items()) or "—"
        threshold = {
            "method": f"{info.get('method')} (chosen on {info.get('chosen_on', 'val')})",
            "thresholds": values,
            "rule": predictor.rule(),
        }
    else:
        threshold = {"method": "none chosen (run medsweep evaluate)", "rule": predictor.rule()}
    return ModelCard(choice.label, facts, metrics, calibration, threshold, notes)


def card_markdown(card: ModelCard) -> str:
    """The card as Markdown (facts, metrics table, calibration, threshold)."""
    lines = [f"### Model card: {card.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in card.facts.items()]
    lines += ["", "**Metrics** (validation and test at the best checkpoint)", ""]
    lines += _markdown_table(card.metrics)
    if card.calibration:
        lines += ["", "**Calibration**", ""]
        lines += [f"- {k}: {v}" for k, v in card.calibration.items()]
    lines += ["", "**Decision threshold**", ""]
    lines += [f"- {k}: {v}" for k, v in card.threshold.items()]
    lines += [f"\n_{n}_" for n in card.notes]
    return "\n".join(lines)


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return [head, rule, *body]
