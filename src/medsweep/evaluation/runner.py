"""Evaluate a run, a fold ensemble or a whole multirun folder; write everything to ``eval/``."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsweep.evaluation.bootstrap import metrics_with_ci
from medsweep.evaluation.calibration import (
    apply_temperature,
    calibration_errors,
    fit_temperature,
    reliability_bins,
)
from medsweep.evaluation.data import EvalData, Part, load_run, one_vs_rest
from medsweep.evaluation.ensemble import ensemble_gain, fold_ensemble
from medsweep.evaluation.metrics import (
    classification_report,
    confusion_matrices,
    curves,
    curves_frame,
    metric_functions,
    point_metrics,
    predicted_labels,
)
from medsweep.evaluation.settings import EvalSettings
from medsweep.evaluation.thresholds import (
    THRESHOLDS_FILE,
    choose_thresholds,
    decisions,
    threshold_vector,
    write_thresholds,
)
from medsweep.results import METRICS_FILE, job_dir_name, write_json_atomic

log = logging.getLogger(__name__)

EVAL_DIRNAME = "eval"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,-]+")


@dataclass
class Evaluation:
    """Everything computed for one run or ensemble, and the files written."""

    data: EvalData
    out_dir: Path
    settings: EvalSettings
    kind: str = "run"
    metrics: pd.DataFrame | None = None
    class_report: pd.DataFrame | None = None
    confusion: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_table: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None
    reliability: dict[str, pd.DataFrame] = field(default_factory=dict)
    temperature: float = 1.0
    ensemble: pd.DataFrame | None = None
    tta: pd.DataFrame | None = None
    selections: pd.DataFrame | None = None
    thumbs: dict[int, dict[str, str]] = field(default_factory=dict)
    cam_info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def rel(self, key: str) -> str:
        """A written file's path relative to ``out_dir``."""
        return self.files[key].relative_to(self.out_dir).as_posix()


def _write_table(ev: Evaluation, key: str, frame: pd.DataFrame, name: str, index=False) -> None:
    path = ev.out_dir / "tables" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=index, float_format="%.10g")
    ev.files[key] = path


def compute_predictions(ev: Evaluation) -> None:
    """Every result that needs only the saved predictions (metrics, CIs, curves, thresholds,
    calibration), written as CSV/JSON under ``ev.out_dir``."""
    data, s = ev.data, ev.settings
    task, classes = data.task, data.classes
    test, val = data.test, data.val
    if test is None:
        raise ValueError(f"{data.name}: no test predictions; evaluation reads the test part")
    y, p = test.targets, test.probs
    functions = metric_functions(task)
    ev.metrics = metrics_with_ci(y, p, task, functions, s.n_boot, s.confidence, s.seed)
    _write_table(ev, "metrics_csv", ev.metrics, "metrics_ci.csv")
    ev.class_report = classification_report(y, p, task, classes)
    _write_table(ev, "class_report_csv", ev.class_report, "classification_report.csv")
    ev.confusion = confusion_matrices(y, p, task, classes)
    for key, frame in ev.confusion.items():
        name = "confusion_" + _UNSAFE.sub("_", key.replace(":", "_")) + ".csv"
        _write_table(ev, f"confusion:{key}", frame, name, index=True)
    ev.curves = curves(y, p, task, classes)
    path = ev.out_dir / "curves.json"
    write_json_atomic(path, ev.curves)
    ev.files["curves_json"] = path
    _write_table(ev, "curves_csv", curves_frame(ev.curves), "curves.csv")

    # thresholds on validation, applied to test
    if val is not None:
        ev.thresholds = choose_thresholds(
            val.probs, val.targets, task, classes, s.threshold_method, s.target_recall, s.per_class
        )
    else:
        ev.notes.append("no validation predictions: thresholds stay at 0.5 / argmax")
    ev.files["thresholds"] = write_thresholds(
        ev.out_dir / THRESHOLDS_FILE,
        ev.thresholds,
        task,
        classes,
        s.threshold_method,
        s.target_recall,
        s.per_class,
    )
    ev.threshold_table = threshold_comparison(data, ev.thresholds)
    _write_table(ev, "thresholds_csv", ev.threshold_table, "thresholds.csv")

    # calibration: temperature fitted on validation, before/after on test
    if val is not None:
        ev.temperature = fit_temperature(val.probs, val.targets, task)
    scaled = apply_temperature(p, task, ev.temperature)
    rows = []
    for part_name, part in (("val", val), ("test", test)):
        if part is None:
            continue
        after = apply_temperature(part.probs, task, ev.temperature)
        for variant, probs in (("before", part.probs), ("after temperature", after)):
            rows.append(
                {
                    "part": part_name,
                    "probabilities": variant,
                    **calibration_errors(probs, part.targets, task, s.n_bins),
                }
            )
    ev.calibration = pd.DataFrame(rows)
    ev.calibration["temperature"] = ev.temperature
    _write_table(ev, "calibration_csv", ev.calibration, "calibration.csv")
    ev.reliability = {
        "test, before": reliability_bins(p, y, task, s.n_bins),
        f"test, T={ev.temperature:.2f}": reliability_bins(scaled, y, task, s.n_bins),
    }
    for name, table in ev.reliability.items():
        key = "before" if "before" in name else "after"
        _write_table(ev, f"reliability_{key}", table, f"reliability_{key}.csv")
    path = ev.out_dir / "calibration.json"
    write_json_atomic(
        path,
        {
            "temperature": ev.temperature,
            "fitted_on": "val" if val is not None else None,
            "rule": "probabilities from logits / temperature (softmax for multiclass, sigmoid else)",
            "n_bins": s.n_bins,
            "test_before": calibration_errors(p, y, task, s.n_bins),
            "test_after": calibration_errors(scaled, y, task, s.n_bins),
        },
    )
    ev.files["calibration_json"] = path
    ev.selections = select_examples(test, task, classes, ev.thresholds, s.top_k)
    _write_table(ev, "examples_csv", ev.selections, "examples.csv")


def threshold_comparison(data: EvalData, thresholds: dict[str, float]) -> pd.DataFrame:
    """Per class or label: threshold and test precision, recall, specificity, F1 at 0.5 / argmax
    (before) and at the chosen thresholds (after)."""
    test, task, classes = data.test, data.task, data.classes
    k = len(classes)
    truth = one_vs_rest(test.targets, task, k)
    before = (
        one_vs_rest(predicted_labels(test.probs, task), task, k)
        if task != "multilabel"
        else predicted_labels(test.probs, task)
    )
    after = decisions(test.probs, task, classes, thresholds) if thresholds else before
    if task == "binary":
        after = np.concatenate([1 - after, after], axis=1)
    names = [classes[1]] if task == "binary" else list(classes)
    rows = []
    for name in names:
        j = classes.index(name)
        for when, pred in (("before", before), ("after", after)):
            tp = int(((pred[:, j] == 1) & (truth[:, j] == 1)).sum())
            fp = int(((pred[:, j] == 1) & (truth[:, j] == 0)).sum())
            fn = int(((pred[:, j] == 0) & (truth[:, j] == 1)).sum())
            tn = int(((pred[:, j] == 0) & (truth[:, j] == 0)).sum())
            rows.append(
                {
                    "class": name,
                    "decision": when,
                    "threshold": (0.5 if task != "multiclass" else float("nan"))
                    if when == "before"
                    else thresholds.get(name, float("nan")),
                    "precision": tp / (tp + fp) if tp + fp else float("nan"),
                    "recall": tp / (tp + fn) if tp + fn else float("nan"),
                    "specificity": tn / (tn + fp) if tn + fp else float("nan"),
                    "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
                    "fnr": fn / (tp + fn) if tp + fn else float("nan"),
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "tn": tn,
                }
            )
    frame = pd.DataFrame(rows)
    if task != "multiclass" or thresholds:
        summary = point_metrics(
            test.targets, test.probs, task, threshold_vector(thresholds, classes, task)
        )
        frame.attrs["after"] = summary
    frame.attrs["before"] = point_metrics(test.targets, test.probs, task)
    return frame


def select_examples(
    test: Part, task: str, classes: list[str], thresholds: dict[str, float], top_k: int
) -> pd.DataFrame:
    """Per class (label): the ``top_k`` most confident correct calls, the worst misses (samples of
    the class called otherwise, lowest probability first) and, for multilabel, the worst false
    alarms; decisions at the chosen thresholds."""
    k = len(classes)
    truth = one_vs_rest(test.targets, task, k)
    if task == "multilabel":
        called = decisions(test.probs, task, classes, thresholds)
    else:  # binary at the chosen threshold; multiclass by argmax
        labels = predicted_labels(test.probs, task, threshold_vector(thresholds, classes, task))
        called = one_vs_rest(labels, task, k)
    rows = []
    for j, name in enumerate(classes):
        p = test.probs[:, j]
        kinds = {
            "correct": (np.flatnonzero((truth[:, j] == 1) & (called[:, j] == 1)), -p),
            "missed": (np.flatnonzero((truth[:, j] == 1) & (called[:, j] == 0)), p),
        }
        if task == "multilabel":
            kinds["false alarm"] = (np.flatnonzero((truth[:, j] == 0) & (called[:, j] == 1)), -p)
        for kind, (members, key) in kinds.items():
            chosen = members[np.argsort(key[members], kind="stable")][:top_k]
            for rank, r in enumerate(chosen):
                rows.append(
                    {
                        "class": name,
                        "kind": kind,
                        "rank": rank,
                        "row": int(r),
                        "index": int(test.index[r]),
                        "id": test.ids[r],
                        "target": _describe_target(test.targets[r], task, classes),
                        "prob": float(p[r]),
                        "probabilities": ", ".join(
                            f"{c} {v:.2f}" for c, v in zip(classes, test.probs[r])
                        ),
                    }
                )
    return pd.DataFrame(
        rows,
        columns=["class", "kind", "rank", "row", "index", "id", "target", "prob", "probabilities"],
    )


def _describe_target(target, task: str, classes: list[str]) -> str:
    if task == "multilabel":
        return "+".join(c for c, v in zip(classes, target) if v) or "none"
    return classes[int(target)]


def draw_figures(ev: Evaluation) -> None:
    """The evaluation's figures under ``ev.out_dir/figures``."""
    from medsweep.evaluation.figures import plot_confusion, plot_curves, plot_gain, plot_reliability

    fig_dir = ev.out_dir / "figures"
    ev.files["fig_curves"] = plot_curves(ev.curves, fig_dir / "roc_pr.png")
    for key in [k for k in ev.confusion if not k.endswith(":normalised")]:
        name = _UNSAFE.sub("_", key)
        ev.files[f"fig_confusion:{key}"] = plot_confusion(
            ev.confusion[key],
            ev.confusion[f"{key}:normalised"],
            fig_dir / f"confusion_{name}.png",
            title="" if key == "all" else key,
        )
    xlabel = {
        "binary": f"predicted probability of {ev.data.classes[-1]}",
        "multiclass": "top-class probability",
        "multilabel": "label probability (all labels)",
    }[ev.data.task]
    ev.files["fig_reliability"] = plot_reliability(
        ev.reliability, fig_dir / "reliability.png", xlabel
    )
    if ev.ensemble is not None:
        ev.files["fig_gain"] = plot_gain(ev.ensemble, fig_dir / "ensemble_gain.png")


def model_extras(ev: Evaluation, run_dir: Path) -> None:
    """Re-inference for one run: TTA, thumbnails and Grad-CAM of the selected examples."""
    from medsweep.evaluation.inference import load_run_model

    s = ev.settings
    if not (s.tta or s.cam or s.thumbnails):
        return
    try:
        rm = load_run_model(run_dir)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        ev.notes.append(f"TTA and Grad-CAM skipped: the model could not be rebuilt ({err})")
        log.warning("%s: %s", run_dir, ev.notes[-1])
        return
    test = ev.data.test
    if s.tta:
        run_tta(ev, rm, test)
    if (s.cam or s.thumbnails) and ev.selections is not None and len(ev.selections):
        draw_examples(ev, rm)


def run_tta(ev: Evaluation, rm, test: Part) -> None:
    """Test metrics without and with TTA (views averaged), and of each single view."""
    from medsweep.evaluation.inference import predict
    from medsweep.evaluation.tta import tta_views

    s = ev.settings
    views = tta_views(s.tta_flips, s.tta_scales, s.tta_crop_fraction)
    mean, per_view = predict(rm.model, rm.dataset(test.index), rm.task, views, s.batch_size)
    functions = metric_functions(rm.task)
    rows = [{"predictions": "saved (no TTA)", **point_metrics(test.targets, test.probs, rm.task)}]
    for name, probs in per_view.items():
        rows.append({"predictions": f"view {name}", **point_metrics(test.targets, probs, rm.task)})
    rows.append(
        {
            "predictions": f"TTA mean of {len(views)} views",
            **point_metrics(test.targets, mean, rm.task),
        }
    )
    ev.tta = pd.DataFrame(rows)
    gain = ensemble_gain(
        test.targets,
        mean,
        [per_view["identity"]],
        rm.task,
        {k: functions[k] for k in ("acc", "auroc") if k in functions},
        s.n_boot,
        s.confidence,
        s.seed,
    )
    ev.tta.attrs["gain"] = gain
    ev.tta.attrs["max_identity_diff"] = float(np.abs(per_view["identity"] - test.probs).max())
    _write_table(ev, "tta_csv", ev.tta, "tta.csv")
    _write_table(ev, "tta_gain_csv", gain, "tta_gain.csv")


def draw_examples(ev: Evaluation, rm) -> None:
    """Thumbnails (image, Grad-CAM overlay) of the selected examples, one PNG each."""
    import torch

    from medsweep.evaluation.cam import cam_maps, find_target_layer
    from medsweep.evaluation.figures import overlay, save_thumbnail

    s = ev.settings
    sel = ev.selections
    dataset = rm.dataset(sel["index"].to_numpy())
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    class_idx = [ev.data.classes.index(c) for c in sel["class"]]
    maps = None
    if s.cam:
        try:
            layer_name, _, _ = find_target_layer(rm.model, s.cam_layer)
            maps = cam_maps(rm.model, images, class_idx, rm.task, s.cam_method, s.cam_layer)
            ev.cam_info = {"method": s.cam_method, "layer": layer_name}
        except (ValueError, AttributeError, RuntimeError) as err:
            ev.notes.append(f"Grad-CAM skipped: {err}")
    thumbs_dir = ev.out_dir / "figures" / "examples"
    for n in range(len(sel)):
        row = sel.iloc[n]
        index = int(row["index"])
        panels = [rm.raw_image(index)]
        if maps is not None:
            panels.append(overlay(images[n].numpy(), maps[n]))
        safe = _UNSAFE.sub("_", f"{row['class']}_{row['kind']}_{row['rank']}")
        path = save_thumbnail(panels, thumbs_dir / f"{safe}_{index}.png")
        ev.thumbs[n] = {"src": path.relative_to(ev.out_dir).as_posix()}
    if maps is not None:
        np.save(ev.out_dir / "tables" / "cam_maps.npy", maps)


def evaluate_data(
    data: EvalData,
    out_dir: str | Path,
    settings: EvalSettings | None = None,
    kind: str = "run",
    run_dir: Path | None = None,
    members: list[Part] | None = None,
    figures: bool = True,
) -> Evaluation:
    """Evaluate ``data`` and write the tables, figures and pages to ``out_dir``."""
    from medsweep.evaluation.pages import write_pages

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = Evaluation(data, out_dir, settings or EvalSettings(), kind=kind)
    compute_predictions(ev)
    if members is not None:
        s = ev.settings
        ev.ensemble = ensemble_gain(
            data.test.targets,
            data.test.probs,
            [m.probs for m in members],
            data.task,
            metric_functions(data.task),
            s.n_boot,
            s.confidence,
            s.seed,
        )
        _write_table(ev, "ensemble_csv", ev.ensemble, "ensemble_vs_folds.csv")
    if run_dir is not None:
        model_extras(ev, run_dir)
    if figures:
        draw_figures(ev)
    write_summary(ev)
    write_pages(ev)
    if ev.settings.wandb:
        from medsweep.evaluation.wandb_log import log_evaluation

        log_evaluation(ev)
    return ev


def write_summary(ev: Evaluation) -> None:
    """``eval/summary.json``: the headline numbers and where each file is."""
    metrics = ev.metrics.set_index("metric")
    summary = {
        "kind": ev.kind,
        "name": ev.data.name,
        "task": ev.data.task,
        "classes": ev.data.classes,
        "runs": [str(d) for d in ev.data.run_dirs],
        "n_test": len(ev.data.test),
        "test": {
            m: {"estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
            for m, r in metrics.iterrows()
        },
        "thresholds": ev.thresholds,
        "temperature": ev.temperature,
        "notes": ev.notes,
        "files": {k: v.relative_to(ev.out_dir).as_posix() for k, v in ev.files.items()},
    }
    path = ev.out_dir / "summary.json"
    write_json_atomic(path, summary)
    ev.files["summary_json"] = path


def evaluate_run(
    run_dir: str | Path, settings: EvalSettings | None = None, out_dir=None
) -> Evaluation:
    """Evaluate one run folder into ``run_dir/eval``."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    return evaluate_data(data, out_dir or run_dir / EVAL_DIRNAME, settings, "run", run_dir=run_dir)


def evaluate_path(path: str | Path, settings: EvalSettings | None = None) -> list[Evaluation]:
    """Evaluate a run folder, or every ok run of a multirun folder plus one fold ensemble per
    configuration with several folds (in ``path/eval/<configuration>/``)."""
    from medsweep.evaluation.pages import write_index
    from medsweep.report.collect import find_run_dirs

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run={path}: no such folder")
    if (path / METRICS_FILE).is_file():
        return [evaluate_run(path, settings)]
    runs = [
        d
        for d in find_run_dirs(path, exclude=[path / EVAL_DIRNAME])
        if (d / METRICS_FILE).is_file()
    ]
    if not runs:
        raise FileNotFoundError(f"run={path}: no metrics.json in it or below it")
    done: list[Evaluation] = []
    groups: dict[str, list[EvalData]] = {}
    for run_dir in runs:
        record = json.loads((run_dir / METRICS_FILE).read_text())
        if record.get("status") != "ok":
            log.warning("%s: status %s, not evaluated", run_dir, record.get("status"))
            continue
        ev = evaluate_run(run_dir, settings)
        done.append(ev)
        key = record.get("config_hash") or record.get("config_key") or run_dir.name
        groups.setdefault(key, []).append(ev.data)
    for members in groups.values():
        if len(members) < 2:
            continue
        data, aligned = fold_ensemble(members)
        # a short, safe and distinct folder name however long the configuration's key is
        label = job_dir_name(_UNSAFE.sub("_", data.name or "").strip("._"), limit=80)
        done.append(
            evaluate_data(
                data,
                path / EVAL_DIRNAME / f"ensemble_{label}",
                settings,
                "ensemble",
                members=aligned,
            )
        )
    write_index(path / EVAL_DIRNAME, done)
    return done
