"""The ``medsweep`` command line; each subcommand registers itself in ``COMMANDS``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from medsweep import __version__

if TYPE_CHECKING:
    from medsweep.report import Report


def _add_report_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="tables, statistics and figures of a sweep's metrics.json files",
        description=(
            "Collect every metrics.json under DIR (a Hydra multirun folder or any tree of runs), "
            "group runs by configuration, and write per-fold and summary tables, paired "
            "statistics against a baseline, figures and an HTML page to DIR/report/."
        ),
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder holding the runs")
    parser.add_argument(
        "--metric",
        help="metric to rank configurations by, e.g. val/auroc or test/f1 "
        "(default: val/auroc, else the first available)",
    )
    parser.add_argument(
        "--baseline",
        help='baseline configuration: its key ("loss=ce,optimizer=adam") or overrides that '
        'name one configuration ("loss=ce"); default: the default config, else the first',
    )
    parser.add_argument("--out", type=Path, help="output folder (default: DIR/report)")
    parser.add_argument(
        "--no-wandb", action="store_true", help="do not log the summary table to W&B"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip drawing figures")
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="rank runs of different tasks, datasets or class lists in one table",
    )
    parser.set_defaults(handler=_run_report)


def _add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics with CIs, thresholds, calibration, TTA, Grad-CAM of a run or multirun",
        description=(
            "Evaluate RUN (a run folder, or a multirun folder: every ok run plus one fold "
            "ensemble per configuration) from its saved predictions and write eval/ beside it. "
            "Settings are conf/evaluate.yaml's eval node, changed with eval.<field>=<value>."
        ),
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run or multirun folder")
    parser.add_argument(
        "overrides", nargs="*", metavar="eval.FIELD=VALUE", help="e.g. eval.threshold.method=youden"
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, console: Console) -> int:
    from hydra import compose, initialize_config_dir

    from medsweep.evaluation import EvalSettings, evaluate_path
    from medsweep.evaluation.cli import print_evaluations

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run={args.run}", *args.overrides])
    print_evaluations(evaluate_path(args.run, EvalSettings.from_config(cfg.eval)), console)
    return 0


def _add_data_summary_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data-summary",
        help="class counts, image formats, duplicates and sample images of a data= option",
        description=(
            "Compose the data (with overrides as train.py takes them, e.g. data=imagefolder "
            "data.source.root=DIR), run its pre-flight check and split, and write summary.md, "
            "samples.png and data_check.json to --out."
        ),
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data=brain_mri data.source.root=DIR"
    )
    parser.add_argument("--out", type=Path, default=Path("data-summary"), help="output folder")
    parser.add_argument("--per-class", type=int, default=6, help="sample images per class")
    parser.set_defaults(handler=_run_data_summary)


def _run_data_summary(args: argparse.Namespace, console: Console) -> int:
    from medsweep.data.preflight import DataCheckError
    from medsweep.data.summary import write_summary
    from medsweep.pipeline import build_datamodule, compose_config

    try:
        dm = build_datamodule(compose_config(args.overrides))
    except (DataCheckError, FileNotFoundError) as err:
        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(err)))
        return 2
    files = write_summary(dm, args.out, args.per_class)
    check = dm.data_check
    console.print(
        Text(
            f"{dm.source.name}: {check['n_kept']} usable of {check['n_listed']}, "
            f"{len(dm.classes)} classes, {check['duplicates']['images']} duplicate images, "
            f"{check['n_dropped']} left out"
        )
    )
    for path in files.values():
        console.print(Text(f"  {path}"))
    return 0


def _add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="the suite's fit throughput and start-up against a plain PyTorch loop",
        description=(
            "Run the benchmark workloads as interleaved repeats in alternating order (plain loop "
            "first, suite first, suite first, plain first, ...) and write OUT/benchmarks.md "
            "(medians and ratios against the plain loop, the per-pair ratios' geometric mean "
            "with its 95 % interval) and OUT/bench.json (every recorded time)."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder")
    parser.add_argument(
        "--tiny", action="store_true", help="a few images, small models: seconds, not minutes"
    )
    parser.add_argument("--repeats", type=int, help="repeats of each (default 4; --tiny 2)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: trainer=gpu at 32-true for the suite, tensors on the GPU for the plain loop",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: as a run chooses)")
    parser.add_argument(
        "--no-processes",
        action="store_true",
        help="skip the whole-process and start-up figures (skipped with --tiny)",
    )
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace, console: Console) -> int:
    from medsweep.bench import run_bench

    table = run_bench(
        args.out,
        tiny=args.tiny,
        repeats=args.repeats,
        device=args.device,
        threads=args.threads,
        processes=False if args.no_processes else None,
    )
    console.print(Text(table.read_text()))
    console.print(Text(f"Written to {table}", style="bold green"))
    return 0


def _add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="class probabilities and decisions of a run or fold ensemble for image files",
        description=(
            "Predict every image in INPUT (files, or folders searched for PNG, JPEG, TIFF, BMP "
            "and DICOM files) with RUN (a run folder, or a multirun folder: its fold ensemble) "
            "through the run's own decoding and evaluation transform; decisions at the "
            "thresholds in eval/thresholds.json (medsweep evaluate), else 0.5 / argmax. "
            "Unreadable files get an error row; the others go on."
        ),
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run or multirun folder")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="images or folders")
    parser.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="CSV to write (predictions.csv)"
    )
    parser.add_argument(
        "--model",
        help="in a multirun folder: the configuration key of a fold ensemble, or a run's folder "
        "relative to RUN (default: the only ensemble, else the only run)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="average the evaluation's test-time views (flips)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        help="refuse larger images (width x height) before decoding them",
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, console: Console) -> int:
    from medsweep.predict import run_predict

    return run_predict(args, console)


# Subcommands (evaluate, predict, bench) add a registration function here.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_report_command,
    _add_evaluate_command,
    _add_data_summary_command,
    _add_bench_command,
    _add_predict_command,
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="medsweep", description="Experiment suite for image classification studies."
    )
    parser.add_argument("--version", action="version", version=f"medsweep {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def _metric_columns_that_fit(report: Report, console: Console) -> list[str]:
    """The ranking metric, then other metrics of its split while the table fits the terminal."""
    chosen = report.metric
    if chosen is None:
        return []
    split = chosen.split("/", 1)[0]
    others = [m for m in report.metrics if m.startswith(f"{split}/") and m != chosen]
    name_width = min(max([13, *(len(c) for c in report.summary_text["Configuration"])]), 24)
    fixed = name_width + 26 + 11 + 9 + 4  # Δ vs baseline, ok folds, failed, borders
    budget = console.width - fixed - 16
    columns = [chosen]
    for metric in others:
        if budget < 16:
            break
        columns.append(metric)
        budget -= 16
    return columns


def _print_report(report: Report, console: Console) -> None:
    """Print the summary, failed runs and written files of a built report."""
    from medsweep.report.configs import label_of

    text = report.summary_text
    shown = _metric_columns_that_fit(report, console)
    order = "higher is better" if report.higher_is_better else "lower is better"
    title = f"{report.root} — sorted by {report.metric or '—'} ({order})"
    table = Table(title=title, title_justify="left", header_style="bold")
    columns = ["Configuration", *shown]
    # notes (missing folds, failures) are printed below the table, where they have room
    columns += [c for c in ("Δ vs baseline (95% CI)", "ok folds", "failed") if c in text]
    name_width = min(max([13, *(len(c) for c in text["Configuration"])]), 24)
    for column in columns:
        left = column == "Configuration"
        table.add_column(
            column,
            justify="left" if left else "right",
            no_wrap=column in shown,
            overflow="fold",
            min_width=name_width if column == "Configuration" else None,
        )
    for _, row in text.iterrows():
        style = "red" if row["failed"] and row["ok folds"].startswith("0") else None
        table.add_row(*(Text(str(row[c])) for c in columns), style=style)
    console.print(table)
    if report.baseline is not None and len(report.summary) > 1:
        console.print(
            Text(
                f"Baseline: {label_of(report.baseline, report.labels)}; '*' = 95% CI of the corrected "
                "resampled t-test excludes 0 (see stats.md)."
            )
        )
    for key, folds in report.missing.items():
        if folds:
            message = (
                f"missing folds in {label_of(key, report.labels)}: {', '.join(map(str, folds))}"
            )
            console.print(Text(message, style="yellow"))
    if len(report.failed):
        failed = Table(title=f"Failed runs ({len(report.failed)})", title_justify="left")
        for column in ("run", "configuration", "fold", "error"):
            failed.add_column(column, style="red" if column == "error" else None)
        for _, row in report.failed.iterrows():
            failed.add_row(*(Text(str(row[c])) for c in ("run", "configuration", "fold", "error")))
        console.print(failed)
    console.print(Text(f"Report written to {report.out_dir}/", style="bold green"))
    for key in ("html", "summary_md", "summary_csv", "folds_csv", "stats_md", "stats_csv"):
        if key in report.files:
            console.print(Text(f"  {report.files[key]}"))
    n_configs = sum(1 for k in report.files if k.startswith("per_config:"))
    if n_configs:
        console.print(Text(f"  {report.out_dir / 'per_config'}/ ({n_configs} configurations)"))
    if "fold_scores" in report.files:
        console.print(Text(f"  {report.out_dir / 'figures'}/"))
    if report.wandb_dir is not None:
        console.print(Text(f"  W&B run: {report.wandb_dir}"))


def _run_report(args: argparse.Namespace, console: Console) -> int:
    from medsweep.report import build_report

    report = build_report(
        args.dir,
        metric=args.metric,
        baseline=args.baseline,
        out=args.out,
        figures=not args.no_figures,
        wandb=not args.no_wandb,
        allow_mixed=args.allow_mixed,
    )
    _print_report(report, console)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medsweep`` command line; returns the exit status."""
    from medsweep.report.errors import ReportError

    args = build_parser().parse_args(argv)
    console = Console()
    err_console = Console(stderr=True)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    handler = RichHandler(console=err_console, show_path=False, show_time=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    try:
        return args.handler(args, console)
    except ReportError as err:
        err_console.print(Text.assemble(("error: ", "bold red"), str(err)))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
