"""`medsweep report DIR` run as a command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsweep.cli import build_parser, main

SCRIPT = Path(sys.executable).parent / "medsweep"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsweep.cli"]
    env = {**os.environ, "COLUMNS": "200", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_report_command_prints_the_summary(sweep: Path) -> None:
    result = _run("report", str(sweep), "--no-figures", cwd=sweep.parent)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = [line for line in out.splitlines() if "loss=" in line and "±" in line]
    assert [line.split()[1] for line in lines] == ["loss=focal", "loss=ce", "loss=bce"]
    assert "0.940 ± 0.025" in lines[0]
    assert "+0.020 [-0.009, +0.049]" in lines[0]
    assert "3/5" in lines[2]
    assert "missing folds in loss=bce: 3, 4" in out
    assert "sorted by val/auroc (higher is better)" in out
    assert "ValueError: loss is nan at epoch 3" in out
    assert str(sweep / "report" / "report.html") in out
    assert (sweep / "report" / "summary.md").is_file()
    assert not (sweep / "report" / "figures").exists()


def test_report_command_errors_name_the_fault(tmp_path: Path) -> None:
    result = _run("report", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "folder not found" in result.stderr and "missing" in result.stderr


def test_no_metrics_found_names_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.json found under" in err and "empty" in err


def test_unknown_metric_lists_valid_ones(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(sweep), "--metric", "val/dice", "--no-wandb"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown metric 'val/dice'" in err
    assert "val/auroc" in err and "test/acc" in err


def test_unknown_baseline_lists_config_keys(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(sweep), "--baseline", "loss=dice", "--no-wandb"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown baseline 'loss=dice'" in err
    assert "'loss=ce'" in err and "'loss=focal'" in err and "'loss=bce'" in err


def test_parser_has_report_subcommand_with_options() -> None:
    args = build_parser().parse_args(
        ["report", "runs", "--metric", "test/f1", "--baseline", "loss=ce", "--out", "o"]
    )
    assert (args.command, args.metric, args.baseline, str(args.out)) == (
        "report",
        "test/f1",
        "loss=ce",
        "o",
    )
    assert (args.no_wandb, args.no_figures) == (False, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
