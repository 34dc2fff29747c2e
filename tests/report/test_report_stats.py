"""Statistics of fold scores, checked against hand computations and scipy."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy import stats as sps

from medsweep.report import (
    collect_runs,
    compare_to_baseline,
    corrected_resampled_ttest,
    mean_std,
    paired_comparison,
    wilcoxon_p,
)

T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom


def test_mean_and_sample_std_by_hand() -> None:
    mean, std = mean_std([0.80, 0.82, 0.84, 0.86, 0.88])
    # mean = 4.20 / 5 = 0.84; squared deviations 0.0016 + 0.0004 + 0 + 0.0004 + 0.0016 = 0.004
    # std (ddof=1) = sqrt(0.004 / 4) = sqrt(0.001)
    assert mean == pytest.approx(0.84)
    assert std == pytest.approx(math.sqrt(0.001))
    assert std == pytest.approx(0.0316227766)


def test_mean_std_of_one_value_has_no_std() -> None:
    mean, std = mean_std([0.9])
    assert mean == 0.9
    assert math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


def test_corrected_ttest_ci_matches_hand_computation() -> None:
    d = [0.02, 0.01, 0.03, 0.00, 0.04]
    # k = 5, mean = 0.10 / 5 = 0.02
    # s^2 = (0^2 + 0.01^2 + 0.01^2 + 0.02^2 + 0.02^2) / (5 - 1) = 0.001 / 4 = 2.5e-4
    # r = n_val / n_train = 200 / 800 = 0.25
    # corrected variance = (1/5 + 0.25) * 2.5e-4 = 0.45 * 2.5e-4 = 1.125e-4
    # se = sqrt(1.125e-4) = 0.0106066017; t = 0.02 / 0.0106066017 = 1.8856180832
    # half width = t_{0.975,4} * se = 2.7764451052 * 0.0106066017 = 0.0294486474
    # CI = [0.02 - 0.0294486474, 0.02 + 0.0294486474] = [-0.0094486474, 0.0494486474]
    result = corrected_resampled_ttest(d, ratio=200 / 800)
    assert result.n == 5
    assert result.df == 4
    assert result.mean_diff == pytest.approx(0.02)
    assert result.se == pytest.approx(math.sqrt(1.125e-4))
    assert result.t == pytest.approx(1.8856180832, rel=1e-9)
    assert sps.t.ppf(0.975, 4) == pytest.approx(T_975_DF4)
    assert result.ci_low == pytest.approx(0.02 - T_975_DF4 * math.sqrt(1.125e-4))
    assert result.ci_low == pytest.approx(-0.0094486474, abs=1e-9)
    assert result.ci_high == pytest.approx(0.0494486474, abs=1e-9)
    assert result.p_value == pytest.approx(2 * sps.t.sf(1.8856180832, 4), rel=1e-6)
    assert result.p_value == pytest.approx(0.1324, abs=1e-4)
    assert result.significant is False


def test_corrected_ttest_significant_when_ci_excludes_zero() -> None:
    d = [0.05, 0.06, 0.04, 0.05, 0.05]
    # mean = 0.05; s^2 = (0 + 0.01^2 + 0.01^2 + 0 + 0) / 4 = 5e-5
    # corrected variance = (1/5 + 0.25) * 5e-5 = 2.25e-5; se = 0.0047434165
    # CI = 0.05 -/+ 2.7764451052 * 0.0047434165 = [0.0368301645, 0.0631698355]
    result = corrected_resampled_ttest(d, ratio=0.25)
    assert result.ci_low == pytest.approx(0.0368301645, abs=1e-9)
    assert result.ci_high == pytest.approx(0.0631698355, abs=1e-9)
    assert result.significant is True


def test_corrected_ttest_falls_back_to_one_over_k_minus_one() -> None:
    d = [0.02, 0.01, 0.03, 0.00, 0.04]
    # no sizes: r = 1 / (5 - 1) = 0.25, the same numbers as the hand computation above
    result = corrected_resampled_ttest(d)
    assert result.ratio == pytest.approx(0.25)
    assert result.ci_high == pytest.approx(0.0494486474, abs=1e-9)
    # three folds: r = 1/2, variance = (1/3 + 1/2) * s^2
    d3 = [0.01, 0.02, 0.03]
    result3 = corrected_resampled_ttest(d3)
    assert result3.se == pytest.approx(math.sqrt((1 / 3 + 1 / 2) * 1e-4))


@pytest.mark.parametrize("d", [[], [0.03], [float("nan"), 0.02]])
def test_fewer_than_two_differences_give_nan(d: list[float]) -> None:
    result = corrected_resampled_ttest(d)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert math.isnan(result.p_value) and math.isnan(result.t)
    assert result.significant is False
    assert math.isnan(wilcoxon_p(d))


def test_wilcoxon_matches_scipy() -> None:
    d = [0.02, 0.01, 0.03, -0.005, 0.04, 0.015]
    assert wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d).pvalue)
    with_zero = [0.02, 0.01, 0.03, 0.00, 0.04]
    assert wilcoxon_p(with_zero) == pytest.approx(sps.wilcoxon(with_zero).pvalue)
    # the zero is dropped; 4 positive differences: exact two-sided p = 2 / 2^4
    assert wilcoxon_p(with_zero) == pytest.approx(0.125)


@pytest.mark.parametrize("d", [[0.0, 0.0, 0.1], [0.05, 0.05, 0.05, 0.05], [0.0, 0.0]])
def test_wilcoxon_nan_when_degenerate(d: list[float]) -> None:
    assert math.isnan(wilcoxon_p(d))


def test_paired_comparison_on_a_sweep(sweep: Path) -> None:
    runs = collect_runs(sweep)
    auroc = paired_comparison(runs, "loss=focal", "loss=ce", "val/auroc")
    # differences focal - ce: [0.02, 0.01, 0.03, 0.00, 0.04]; r = 200/800 from sizes
    assert auroc["n_pairs"] == 5
    assert auroc["folds"] == "0,1,2,3,4"
    assert auroc["ratio"] == pytest.approx(0.25)
    assert auroc["ratio_source"] == "sizes"
    assert auroc["mean_diff"] == pytest.approx(0.02)
    assert auroc["ci_low"] == pytest.approx(-0.0094486474, abs=1e-9)
    assert auroc["ci_high"] == pytest.approx(0.0494486474, abs=1e-9)
    assert auroc["p_wilcoxon"] == pytest.approx(0.125)
    assert auroc["significant"] is False
    acc = paired_comparison(runs, "loss=focal", "loss=ce", "val/acc")
    assert acc["mean_diff"] == pytest.approx(0.05)
    assert acc["significant"] is True
    # test metrics use the test size: r = 250 / 800
    test = paired_comparison(runs, "loss=focal", "loss=ce", "test/acc")
    assert test["ratio"] == pytest.approx(250 / 800)


def test_pairs_only_on_folds_both_have(sweep: Path) -> None:
    runs = collect_runs(sweep)
    bce = paired_comparison(runs, "loss=bce", "loss=ce", "val/auroc")
    # bce has ok folds 0, 1, 2 (fold 3 failed, fold 4 missing)
    assert bce["n_pairs"] == 3
    assert bce["folds"] == "0,1,2"
    assert bce["baseline_mean"] == pytest.approx((0.90 + 0.91 + 0.92) / 3)
    assert bce["config_mean"] == pytest.approx(0.86)


def test_single_shared_fold_gives_nan_not_an_error(sweep: Path) -> None:
    runs = collect_runs(sweep)
    runs = runs[~((runs["config_key"] == "loss=bce") & (runs["fold"] > 0))]
    row = paired_comparison(runs, "loss=bce", "loss=ce", "val/auroc")
    assert row["n_pairs"] == 1
    assert math.isnan(row["ci_low"]) and math.isnan(row["p_value"])
    assert row["significant"] is False


def test_compare_to_baseline_has_one_row_per_config_and_metric(sweep: Path) -> None:
    runs = collect_runs(sweep)
    table = compare_to_baseline(runs, "loss=ce", ["val/auroc", "val/acc"])
    assert len(table) == 4
    assert set(table["config_key"]) == {"loss=focal", "loss=bce"}
    assert set(table["baseline"]) == {"loss=ce"}
    marked = table.set_index(["config_key", "metric"])["significant"]
    assert bool(marked[("loss=focal", "val/acc")]) is True
    assert bool(marked[("loss=focal", "val/auroc")]) is False


def test_repeated_seeds_without_folds_pair_by_seed(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    job = 0
    for lr, accs in ((0.1, {1: 0.61, 2: 0.64, 3: 0.63}), (0.01, {3: 0.54, 1: 0.52, 2: 0.53})):
        for seed, acc in accs.items():
            overrides = {"optimizer.lr": lr, "seed": seed}
            make_run(tmp_path / str(job), overrides, None, {"acc": acc}, n_folds=None, seed=seed)
            job += 1
    runs = collect_runs(tmp_path)
    assert runs["config_key"].tolist() == ["optimizer.lr=0.1"] * 3 + ["optimizer.lr=0.01"] * 3
    row = paired_comparison(runs, "optimizer.lr=0.01", "optimizer.lr=0.1", "val/acc")
    # pairs by seed: (0.52-0.61, 0.53-0.64, 0.54-0.63) = (-0.09, -0.11, -0.09)
    assert row["n_pairs"] == 3
    assert row["mean_diff"] == pytest.approx(-0.29 / 3)
