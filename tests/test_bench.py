"""The benchmark harness: `medsweep bench --tiny` writes its table, ratios follow the recorded times."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import FAST, ROOT, run, run_cli

from medsweep.bench import END, START, plain_first, small_npz, summarize, write_table


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> Path:
    """``medsweep bench --tiny --out DIR`` run once as a user runs it."""
    out = tmp_path_factory.mktemp("bench")
    done = run_cli(["-m", "medsweep.cli", "bench", "--tiny", "--out", str(out)], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


def test_tiny_bench_writes_a_table_of_both_workloads(tiny_bench: Path) -> None:
    text = (tiny_bench / "benchmarks.md").read_text()
    assert START in text and END in text
    assert "| workload | figure | plain loop | suite | ratio | target | met |" in text
    assert "torch " in text and "Lightning " in text and "Device: " in text
    rows = _table_rows(text)
    figures = {(r[0], r[1]) for r in rows}
    for workload in ("small", "memory"):
        assert (
            workload,
            "fit throughput (train img/s, validation every epoch included)",
        ) in figures
        assert (workload, "fit seconds") in figures
        assert (workload, "training loader alone vs model step alone (img/s)") in figures
    assert all(len(r) == 7 for r in rows)


def test_tiny_bench_ratios_come_from_the_recorded_times(tiny_bench: Path) -> None:
    raw = json.loads((tiny_bench / "bench.json").read_text())
    assert raw["tiny"] is True and raw["repeats"] == 2
    assert list(raw["workloads"]) == ["small", "memory", "fixed"]
    table = _table_rows((tiny_bench / "benchmarks.md").read_text())
    for name, work in raw["workloads"].items():
        if name == "fixed":
            continue
        plain, suite = work["fit"]["plain"], work["fit"]["suite"]
        assert len(plain) == len(suite) == 2
        # every run trained the same images for the same epochs
        assert {p["images"] for p in plain} == {s["images"] for s in suite}
        assert {s["epochs"] for s in suite} == {2}
        plain_rate = statistics.median(p["images"] / p["fit_s"] for p in plain)
        suite_rate = statistics.median(s["images"] / s["fit_s"] for s in suite)
        row = next(r for r in table if r[0] == name and r[1].startswith("fit throughput"))
        assert float(row[2]) == pytest.approx(plain_rate, rel=1e-2)
        assert float(row[3]) == pytest.approx(suite_rate, rel=1e-2)
        assert float(row[4]) == pytest.approx(suite_rate / plain_rate, rel=1e-2)
        loader = statistics.median(work["loader"]["loader_img_s"])
        step = statistics.median(work["loader"]["step_img_s"])
        row = next(r for r in table if r[0] == name and r[1].startswith("training loader"))
        assert float(row[4]) == pytest.approx(loader / step, rel=1e-2)


def test_tiny_bench_fixed_cost_is_the_median_of_pair_differences(tiny_bench: Path) -> None:
    raw = json.loads((tiny_bench / "bench.json").read_text())
    fixed = raw["workloads"]["fixed"]
    assert fixed["fixed_cost"] is True and "loader" not in fixed
    assert "model=mlp" in fixed["overrides"] and "data.image_size=8" in fixed["overrides"]
    plain, suite = fixed["fit"]["plain"], fixed["fit"]["suite"]
    assert {p["images"] for p in plain} == {s["images"] for s in suite}
    table = _table_rows((tiny_bench / "benchmarks.md").read_text())
    rows = {r[1]: r for r in table if r[0] == "fixed"}
    assert set(rows) == {
        "fit seconds",
        "the loop's own cost per fit: suite - plain seconds, median of pairs",
    }
    extra = statistics.median(s["fit_s"] - p["fit_s"] for p, s in zip(plain, suite))
    row = rows["the loop's own cost per fit: suite - plain seconds, median of pairs"]
    assert float(row[3]) == pytest.approx(extra, rel=1e-2, abs=1e-3)
    assert float(rows["fit seconds"][2]) == pytest.approx(
        statistics.median(p["fit_s"] for p in plain), rel=1e-2
    )
    assert row[6] == "" and row[5] == ""  # a measurement, no target


def test_fixed_cost_rows_use_per_pair_differences() -> None:
    raw = _raw([1.0, 2.0, 3.0], [1.5, 2.2, 3.9])
    raw["workloads"]["w"]["fixed_cost"] = True
    rows = {r["figure"]: r for r in summarize(raw)}
    assert set(rows) == {
        "fit seconds",
        "the loop's own cost per fit: suite - plain seconds, median of pairs",
    }
    assert (rows["fit seconds"]["plain"], rows["fit seconds"]["suite"]) == (2.0, 2.2)
    # the differences 0.5, 0.2, 0.9 -> 0.5 (the difference of the medians would be 0.2)
    cost = rows["the loop's own cost per fit: suite - plain seconds, median of pairs"]
    assert cost["suite"] == pytest.approx(0.5) and cost["met"] is None


def test_tiny_bench_alternates_which_side_runs_first(tiny_bench: Path) -> None:
    raw = json.loads((tiny_bench / "bench.json").read_text())
    for work in raw["workloads"].values():
        plain, suite = work["fit"]["plain"], work["fit"]["suite"]
        # repeat 0: the plain loop started first; repeat 1: the suite did
        assert plain[0]["started_at"] < suite[0]["started_at"] < plain[1]["started_at"]
        assert suite[1]["started_at"] < plain[1]["started_at"]
        assert plain[0]["started_at"] + plain[0]["fit_s"] <= suite[0]["started_at"] + 1e-3


def test_process_pairs_record_each_process_from_its_own_files(tmp_path: Path) -> None:
    from medsweep.bench import process_pairs, workloads

    small = workloads(tiny=True)[0]
    small_npz(tmp_path / "small.npz", **small.npz)
    done = process_pairs(small, tmp_path, repeats=1, threads=1, scratch=tmp_path)
    (plain,), (suite,) = done["plain"], done["suite"]
    assert plain["rc"] == suite["rc"] == 0
    # repeat 0 runs the plain loop's process first; the suite's starts after it ended
    assert plain["started_at"] + plain["wall_s"] <= suite["started_at"] + 1e-3
    # each figure is read from the process's own record
    plain_rec = json.loads((tmp_path / "plain-process-0.json").read_text())
    suite_rec = json.loads((tmp_path / "suite-process-0" / "metrics.json").read_text())["timing"]
    assert plain["fit_s"] == plain_rec["fit_s"] and suite["fit_s"] == suite_rec["fit_s"]
    assert plain["first_step_s"] == pytest.approx(plain_rec["first_step_at"] - plain["started_at"])
    assert suite["first_step_s"] == pytest.approx(suite_rec["first_step_at"] - suite["started_at"])
    for record in (plain, suite):
        assert 0 < record["first_step_s"] < record["wall_s"]
        assert 0 < record["fit_s"] < record["wall_s"] - record["first_step_s"] + 1.0
    assert [len(done[k]) for k in ("help_s", "config_error_s", "value_error_s")] == [1, 1, 1]


def test_pairs_run_in_abba_order_so_position_and_drift_cancel() -> None:
    order = ["plain" if plain_first(r) else "suite" for r in range(8)]
    assert order == ["plain", "suite", "suite", "plain"] * 2
    # a cost of running second, and a speed drifting linearly with each run, fall on both sides
    # alike over each four pairs: the mean position of the plain runs equals the suite's
    positions = {"plain": [], "suite": []}
    for r, first in enumerate(order):
        second = "suite" if first == "plain" else "plain"
        positions[first].append(2 * r)
        positions[second].append(2 * r + 1)
    assert sum(positions["plain"]) == sum(positions["suite"])
    assert sum(p % 2 for p in positions["plain"]) == sum(p % 2 for p in positions["suite"])


def test_pair_ratio_row_is_the_geometric_mean_and_its_t_interval() -> None:
    from scipy import stats

    plain, suite = [10.0, 12.0, 11.0, 9.0], [10.5, 12.0, 12.1, 9.3]
    rows = summarize(_raw(plain, suite))
    row = next(r for r in rows if r["figure"].startswith("fit throughput per pair"))
    ratios = np.array(plain) / np.array(suite)  # the same images: throughput ratio = time ratio
    logs = np.log(ratios)
    half = stats.t.ppf(0.975, 3) * logs.std(ddof=1) / 2.0
    assert row["ratio"] == pytest.approx(float(np.exp(logs.mean())), rel=1e-12)
    low, high = np.exp(logs.mean() - half), np.exp(logs.mean() + half)
    assert row["figure"] == (
        f"fit throughput per pair: geometric mean of 4 ratios [95 % interval {low:.3f}, {high:.3f}]"
    )
    assert row["met"] is None and math.isnan(row["plain"])
    # one pair gives no interval and no row
    assert not any(
        r["figure"].startswith("fit throughput per pair") for r in summarize(_raw([1.0], [2.0]))
    )


def _raw(plain_fit: list[float], suite_fit: list[float], images: int = 100) -> dict:
    fit = {
        "plain": [{"fit_s": s, "images": images} for s in plain_fit],
        "suite": [{"fit_s": s, "images": images} for s in suite_fit],
    }
    loader = {"loader_img_s": [300.0, 900.0, 600.0], "step_img_s": [100.0, 200.0, 150.0]}
    return {"workloads": {"w": {"fit": fit, "loader": loader}}}


def test_summary_is_medians_and_their_ratio() -> None:
    rows = {r["figure"]: r for r in summarize(_raw([1.0, 2.0, 4.0], [2.0, 4.0, 5.0]))}
    through = rows["fit throughput (train img/s, validation every epoch included)"]
    # plain rates 100, 50, 25 -> median 50; suite rates 50, 25, 20 -> median 25
    assert through["plain"] == 50.0 and through["suite"] == 25.0
    assert through["ratio"] == 0.5 and through["met"] is False
    seconds = rows["fit seconds"]
    assert (seconds["plain"], seconds["suite"], seconds["ratio"]) == (2.0, 4.0, 0.5)
    loader = rows["training loader alone vs model step alone (img/s)"]
    assert (loader["suite"], loader["plain"], loader["ratio"], loader["met"]) == (
        600.0,
        150.0,
        4.0,
        True,
    )


def test_process_rows_and_their_targets() -> None:
    raw = _raw([1.0], [1.0])
    raw["process"] = {
        "plain": [{"wall_s": 10.0, "first_step_s": 2.0}, {"wall_s": 12.0, "first_step_s": 4.0}],
        "suite": [{"wall_s": 20.0, "first_step_s": 6.0}, {"wall_s": 16.0, "first_step_s": 4.0}],
        "help_s": [1.0, 3.0],
        "config_error_s": [2.0, 2.0],
        "value_error_s": [0.5, 1.5, 4.0],
    }
    rows = {r["figure"]: r for r in summarize(raw)}
    whole = rows["whole process seconds"]
    assert (whole["plain"], whole["suite"], whole["ratio"]) == (11.0, 18.0, 11.0 / 18.0)
    first = rows["process start -> first training step (s)"]
    assert (first["suite"], first["met"]) == (5.0, True)
    assert rows["`train.py --help` (s)"]["suite"] == 2.0
    assert math.isnan(rows["an unknown option: `loss=no_such_loss` (s)"]["ratio"])
    assert rows["a wrong plain value: `data.image_size=0` (s)"]["suite"] == 1.5


def test_table_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    write_table(path, "first")
    assert path.read_text() == f"# Benchmarks\n\n{START}\nfirst\n{END}\n"
    path.write_text(f"notes above\n{START}\nold table\n{END}\nnotes below\n")
    write_table(path, "new table")
    assert path.read_text() == f"notes above\n{START}\nnew table\n{END}\nnotes below\n"


def test_small_npz_is_a_binary_split_of_the_digits(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    path = small_npz(tmp_path / "small.npz", n_train=30, n_val=10, n_test=5, size=28)
    with np.load(path) as f:
        sizes = {p: len(f[f"{p}_labels"]) for p in ("train", "val", "test")}
        images, labels = f["train_images"], f["train_labels"]
    assert sizes == {"train": 30, "val": 10, "test": 5}
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    digits = load_digits()
    first = np.random.default_rng(0).permutation(len(digits.target))[0]
    assert labels[0, 0] == int(digits.target[first] < 5)


def test_timing_records_the_first_training_step(tmp_path: Path) -> None:
    before = time.time()
    record = run([*FAST, "data=digits_binary"], tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert before < record["timing"]["first_step_at"] < time.time()
    assert saved["timing"]["first_step_at"] == record["timing"]["first_step_at"]


def test_bench_cli_is_registered() -> None:
    done = run_cli(["-m", "medsweep.cli", "bench", "--help"])
    assert done.returncode == 0 and "--tiny" in done.stdout and sys.executable
