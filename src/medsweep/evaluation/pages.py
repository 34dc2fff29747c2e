"""The evaluation page and the error-analysis page of a run or ensemble (one renderer: report.page)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from medsweep.report.page import (
    Bullets,
    Details,
    Figure,
    Gallery,
    Heading,
    Link,
    Page,
    Table,
    Text,
    format_value,
    write_page,
)

EVAL_PAGE = "index"
ERRORS_PAGE = "errors"


def _ci(low: float, high: float) -> str:
    return f"[{format_value(low)}, {format_value(high)}]"


def metrics_display(metrics: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Metric, estimate and its intervals as display columns."""
    pct = f"{confidence:.0%}"
    table = pd.DataFrame(
        {
            "metric": metrics["metric"],
            "test": metrics["estimate"],
            f"{pct} CI (bootstrap)": [
                _ci(a, b) for a, b in zip(metrics["ci_low"], metrics["ci_high"])
            ],
        }
    )
    if metrics["delong_low"].notna().any():
        table[f"{pct} CI (DeLong)"] = [
            _ci(a, b) if pd.notna(a) else "—"
            for a, b in zip(metrics["delong_low"], metrics["delong_high"])
        ]
    return table


def headline(ev) -> str:
    """One line: the AUROC and accuracy with their intervals."""
    m = ev.metrics.set_index("metric")
    parts = []
    for name, label in (("auroc", "AUROC"), ("acc", "accuracy"), ("f1", "F1")):
        if name in m.index:
            r = m.loc[name]
            parts.append(f"{label} {format_value(r['estimate'])} {_ci(r['ci_low'], r['ci_high'])}")
    return f"Test ({len(ev.data.test)} samples): " + " · ".join(parts)


def _meta(ev) -> list[str]:
    s = ev.settings
    lines = [
        f"{'Fold ensemble of ' + str(len(ev.data.run_dirs)) + ' runs' if ev.kind == 'ensemble' else 'Run'}: "
        + ", ".join(str(d) for d in ev.data.run_dirs[:6])
        + (" …" if len(ev.data.run_dirs) > 6 else ""),
        f"Task: {ev.data.task} · classes: {', '.join(ev.data.classes)}",
        f"Intervals: {s.confidence:.0%}, stratified bootstrap over test samples ({s.n_boot} "
        "resamples, percentile); DeLong's for the binary AUROC",
        f"Created: {datetime.now().isoformat(timespec='seconds')}",
    ]
    if ev.kind == "ensemble":
        lines.insert(
            2,
            "Ensemble: the folds' test probabilities averaged; thresholds and temperature chosen "
            "on the pooled out-of-fold validation predictions",
        )
    return lines


def _threshold_blocks(ev) -> list:
    s = ev.settings
    blocks: list = [Heading("Decision thresholds", anchor="thresholds")]
    if ev.thresholds:
        rule = {
            "max_f1": "the highest F1",
            "youden": "the highest Youden's J (sensitivity + specificity − 1)",
            "target_recall": f"the highest threshold whose recall reaches {s.target_recall:g}",
        }[s.threshold_method]
        blocks.append(
            Text(
                f"Chosen on validation for {rule}, applied to test (positive when probability ≥ "
                "threshold). Stored in thresholds.json for prediction and the app."
            )
        )
    else:
        blocks.append(
            Text(
                "Multiclass decisions are the argmax; ask for one-vs-rest thresholds with "
                "eval.threshold.per_class=true."
            )
        )
    table = ev.threshold_table.drop(columns=["tp", "fp", "fn", "tn"])
    blocks.append(
        Table(
            table, caption="Test, per class, before (0.5 / argmax) and after the chosen thresholds"
        )
    )
    before, after = ev.threshold_table.attrs.get("before"), ev.threshold_table.attrs.get("after")
    if before and after:
        frame = pd.DataFrame(
            {
                "metric": list(before),
                "before": list(before.values()),
                "after": [after[k] for k in before],
            }
        )
        blocks.append(Table(frame, caption="Test metrics before and after"))
    blocks.append(Link("thresholds.json", "thresholds.json", "Thresholds: "))
    return blocks


def _calibration_blocks(ev) -> list:
    blocks: list = [Heading("Calibration", anchor="calibration")]
    if "fig_reliability" in ev.files:
        blocks.append(Figure(ev.rel("fig_reliability"), "Reliability diagram (test)"))
    blocks.append(
        Text(
            f"Temperature scaling fitted on validation: T = {format_value(ev.temperature)} "
            "(logits divided by T; the argmax is unchanged). ECE and MCE over "
            f"{ev.settings.n_bins} equal-width bins (torchmetrics), Brier score (scikit-learn), NLL."
        )
    )
    blocks.append(Table(ev.calibration.drop(columns=["temperature"])))
    return blocks


def _example_figure(ev, n: int) -> Figure | None:
    if n not in ev.thumbs:
        return None
    row = ev.selections.iloc[n]
    caption = f"{row['id']}: true {row['target']}; {row['probabilities']}"
    return Figure(ev.thumbs[n]["src"], caption)


def _gallery(ev, rows: pd.DataFrame, title: str) -> list:
    figures = [f for f in (_example_figure(ev, int(i)) for i in rows.index) if f is not None]
    if figures:
        return [Gallery(figures, title)]
    if len(rows):
        shown = rows[["id", "target", "prob", "probabilities"]]
        return [Table(shown, caption=title)]
    return [Text(f"{title}: none.", "meta")]


def _gallery_blocks(ev) -> list:
    sel = ev.selections
    if sel is None or not len(sel):
        return []
    what = "image | Grad-CAM overlay" if ev.cam_info else "image"
    blocks: list = [Heading("Examples per class", anchor="examples")]
    if ev.cam_info:
        blocks.append(
            Text(
                f"{ev.cam_info['method']} on layer {ev.cam_info['layer']}, for the class of the "
                f"gallery. Each thumbnail: {what}."
            )
        )
    for i, name in enumerate(ev.data.classes):
        inner: list = []
        for kind, title in (
            ("correct", "Most confident correct"),
            ("missed", "Worst misses (samples of the class called otherwise)"),
            ("false alarm", "Worst false alarms"),
        ):
            rows = sel[(sel["class"] == name) & (sel["kind"] == kind)]
            if kind == "false alarm" and not len(rows):
                continue
            inner += _gallery(ev, rows, title)
        blocks.append(Details(name, inner, open=i == 0))
    return blocks


def evaluation_page(ev) -> Page:
    """The evaluation page: figures, metrics with CIs, per-class report, thresholds, calibration,
    ensemble, TTA and examples."""
    s = ev.settings
    blocks: list = [
        Text(headline(ev), "lead"),
        Link(f"{ERRORS_PAGE}.html", "Error analysis", "See also: "),
    ]
    blocks += [Text(n, "note") for n in ev.notes]
    blocks.append(Heading("ROC and precision-recall", anchor="curves"))
    if "fig_curves" in ev.files:
        blocks.append(Figure(ev.rel("fig_curves"), "ROC and precision-recall curves (test)"))
    blocks.append(Heading("Test metrics", anchor="metrics"))
    blocks.append(Table(metrics_display(ev.metrics, s.confidence)))
    blocks.append(Heading("Per class", anchor="per-class"))
    blocks.append(Table(ev.class_report))
    blocks.append(Heading("Confusion", anchor="confusion"))
    for key in [k for k in ev.files if k.startswith("fig_confusion:")]:
        blocks.append(Figure(ev.rel(key), key.split(":", 1)[1]))
    blocks += _threshold_blocks(ev)
    blocks += _calibration_blocks(ev)
    if ev.ensemble is not None:
        blocks.append(Heading("Fold ensemble against single folds", anchor="ensemble"))
        if "fig_gain" in ev.files:
            blocks.append(
                Figure(ev.rel("fig_gain"), "Gain of the ensemble over the mean single fold")
            )
        cols = [
            "metric",
            "ensemble",
            "mean_of_folds",
            "std_of_folds",
            "gain",
            "gain_ci_low",
            "gain_ci_high",
        ]
        blocks.append(
            Table(
                ev.ensemble[cols],
                caption="Gain: ensemble − mean of folds on the same test samples; CI by paired "
                "stratified bootstrap",
            )
        )
    if ev.tta is not None:
        blocks.append(Heading("Test-time augmentation", anchor="tta"))
        blocks.append(Table(ev.tta))
        gain = ev.tta.attrs.get("gain")
        if gain is not None:
            blocks.append(
                Table(
                    gain[
                        [
                            "metric",
                            "ensemble",
                            "mean_of_folds",
                            "gain",
                            "gain_ci_low",
                            "gain_ci_high",
                        ]
                    ].rename(columns={"ensemble": "TTA", "mean_of_folds": "no TTA"}),
                    caption="TTA gain with its bootstrap CI",
                )
            )
    blocks += _gallery_blocks(ev)
    files = sorted(
        v.relative_to(ev.out_dir).as_posix()
        for k, v in ev.files.items()
        if not k.startswith("fig_")
    )
    blocks.append(Details("Files", [Bullets(files)]))
    return Page(f"Evaluation: {ev.data.name or 'default'}", _meta(ev), blocks)


def fnr_table(ev) -> pd.DataFrame:
    """False-negative rate per class (label) at the chosen decision, from the threshold table."""
    table = ev.threshold_table
    chosen = table[table["decision"] == "after"]
    return pd.DataFrame(
        {
            "class": chosen["class"],
            "false-negative rate": chosen["fnr"],
            "missed": chosen["fn"],
            "positives": chosen["fn"] + chosen["tp"],
            "false positives": chosen["fp"],
            "negatives": chosen["fp"] + chosen["tn"],
        }
    ).reset_index(drop=True)


def errors_page(ev) -> Page:
    """The error-analysis page: FNR first, confusion, worst misses and false alarms, calibration,
    thresholds."""
    task, classes = ev.data.task, ev.data.classes
    fnr = fnr_table(ev)
    if task == "binary":
        r = fnr.iloc[0]
        t = ev.thresholds.get(classes[1], 0.5)
        lead = (
            f"False-negative rate of {classes[1]}: {format_value(r['false-negative rate'])} — "
            f"{int(r['missed'])} of {int(r['positives'])} positives missed at threshold "
            f"{format_value(t)}"
        )
    else:
        worst = fnr.sort_values("false-negative rate", ascending=False).iloc[0]
        lead = (
            f"Highest false-negative rate: {worst['class']} {format_value(worst['false-negative rate'])} "
            f"({int(worst['missed'])} of {int(worst['positives'])} missed)"
        )
    blocks: list = [
        Text(lead, "lead"),
        Table(fnr, caption="At the chosen decision (see Thresholds)"),
    ]
    blocks.append(Link(f"{EVAL_PAGE}.html", "Full evaluation", "See also: "))
    blocks.append(Heading("Confusion", anchor="confusion"))
    for key in [k for k in ev.files if k.startswith("fig_confusion:")]:
        blocks.append(Figure(ev.rel(key), key.split(":", 1)[1]))
    counts = {k: v for k, v in ev.confusion.items() if not k.endswith(":normalised")}
    for key, frame in counts.items():
        blocks.append(
            Table(
                frame,
                index=True,
                caption=f"Counts at 0.5 / argmax (rows true, columns predicted) {'' if key == 'all' else key}",
            )
        )
    sel = ev.selections
    if task == "binary":
        sections = [
            (
                "Worst false negatives",
                sel[(sel["class"] == classes[1]) & (sel["kind"] == "missed")],
            ),
            (
                "Worst false positives",
                sel[(sel["class"] == classes[0]) & (sel["kind"] == "missed")],
            ),
        ]
    elif task == "multiclass":
        sections = [
            (f"Worst misses of {c}", sel[(sel["class"] == c) & (sel["kind"] == "missed")])
            for c in classes
        ]
    else:
        sections = []
        for c in classes:
            sections.append(
                (
                    f"Worst false negatives of {c}",
                    sel[(sel["class"] == c) & (sel["kind"] == "missed")],
                )
            )
            sections.append(
                (
                    f"Worst false positives of {c}",
                    sel[(sel["class"] == c) & (sel["kind"] == "false alarm")],
                )
            )
    blocks.append(Heading("Worst errors", anchor="errors"))
    if ev.cam_info:
        blocks.append(
            Text(
                f"Each thumbnail: image | {ev.cam_info['method']} overlay for the class named.",
                "meta",
            )
        )
    for title, rows in sections:
        blocks += _gallery(ev, rows, title)
    blocks += _calibration_blocks(ev)
    blocks += _threshold_blocks(ev)
    return Page(f"Error analysis: {ev.data.name or 'default'}", _meta(ev), blocks)


def write_pages(ev) -> None:
    """Write index.{md,html} and errors.{md,html} into ``ev.out_dir``."""
    for name, page in ((EVAL_PAGE, evaluation_page(ev)), (ERRORS_PAGE, errors_page(ev))):
        files = write_page(page, ev.out_dir / name)
        ev.files[f"{name}_md"], ev.files[f"{name}_html"] = files["md"], files["html"]


def write_index(out_dir: Path, evaluations: list) -> dict:
    """A multirun's ``eval/index``: one row per run or ensemble with its headline and links."""
    from medsweep.report.configs import common_overrides, config_labels

    # the overrides every configuration shares are named once, above the table, not in each row
    keys = [ev.data.name or "" for ev in evaluations]
    labels, common = config_labels(keys), common_overrides(keys)
    rows = []
    for ev in evaluations:
        m = ev.metrics.set_index("metric")
        href = _relpath(Path(ev.files["index_html"]).resolve(), out_dir)
        rows.append(
            {
                "evaluation": labels.get(ev.data.name or "") or ev.data.name or "default",
                "kind": ev.kind,
                "fold": "—" if ev.kind == "ensemble" else ev.data.record.get("fold"),
                "auroc": m["estimate"].get("auroc"),
                "acc": m["estimate"].get("acc"),
                "href": href,
            }
        )
    frame = pd.DataFrame(rows)
    blocks: list = [Text("Each row links to its evaluation page.", "meta"), Table(frame)]
    blocks += [Link(r["href"], f"{r['evaluation']} ({r['kind']} {r['fold']})") for r in rows]
    meta = [f"Folder: {out_dir.parent.resolve()}"]
    if common:
        meta.append(f"Common to all configurations: {common}")
    return write_page(Page("Evaluations", meta, blocks), out_dir / "index")


def _relpath(target: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(target, start.resolve())).as_posix()
