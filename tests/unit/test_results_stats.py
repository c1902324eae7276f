"""Per-cell statistics against independent computations, and the two-sample tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from miglab.results.stats import (
    CellSamples,
    StabilityRule,
    adjust_p_values,
    bootstrap_difference,
    cell_statistics,
    welch_difference,
)
from scipy import stats as scipy_stats


def sample_frame(groups: dict[str, list[tuple[int, int, bool, int]]]) -> pd.DataFrame:
    """Rows of (bytes, elapsed_ns, backing_ok, failed_pages) per copy config."""
    rows = []
    for config, samples in groups.items():
        for moved, elapsed, backing_ok, failed in samples:
            rows.append(
                {
                    "host": "h",
                    "page_kind": "2M",
                    "load": "idle",
                    "workqueue": None,
                    "kernel_variant": "v",
                    "copy_config": config,
                    "page_count": 1,
                    "bytes": moved,
                    "elapsed_ns": elapsed,
                    "gbps": moved / elapsed,
                    "backing_ok": backing_ok,
                    "failed_pages": failed,
                }
            )
    frame = pd.DataFrame(rows)
    for column in ("host", "page_kind", "load", "kernel_variant", "copy_config"):
        frame[column] = frame[column].astype("category")
    frame["workqueue"] = pd.Categorical(frame["workqueue"], categories=["unbound"])
    return frame


def test_cell_statistics_match_independent_computation() -> None:
    rng = np.random.default_rng(7)
    moved = 2 << 20
    elapsed = rng.integers(100_000, 400_000, size=11)
    samples = [(moved, int(t), True, 0) for t in elapsed]
    samples += [(moved, 1000, False, 0), (moved, 1000, True, 2)]  # excluded
    frame = sample_frame({"mt_4": samples})
    (row,) = cell_statistics(frame, StabilityRule(), 0.95).to_dict("records")
    gbps = moved / elapsed
    assert row["samples"] == 13 and row["n"] == 11 and row["excluded"] == 2
    assert row["excluded_backing"] == 1 and row["excluded_failed"] == 1
    assert row["mean"] == pytest.approx(11 * moved / elapsed.sum())
    assert row["mean"] == pytest.approx(scipy_stats.hmean(gbps))  # equal-sized moves
    assert row["amean"] == pytest.approx(gbps.mean())
    assert row["median"] == pytest.approx(np.median(gbps))
    assert row["min"] == pytest.approx(gbps.min()) and row["max"] == pytest.approx(gbps.max())
    assert row["cv"] == pytest.approx(gbps.std(ddof=1) / gbps.mean())
    low, high = scipy_stats.t.interval(0.95, 10, loc=gbps.mean(), scale=scipy_stats.sem(gbps))
    assert (row["amean_lo"], row["amean_hi"]) == (pytest.approx(low), pytest.approx(high))
    ordered = np.sort(gbps)
    # n = 11: the 95 % order-statistic interval of the median is (x(2), x(10)), 1-based
    assert (row["median_lo"], row["median_hi"]) == (ordered[1], ordered[9])
    # delta method for the ratio of sums, checked against its textbook form
    ratio = row["mean"]
    residual = moved - ratio * elapsed
    se = math.sqrt((residual**2).sum() / 10 / 11) / elapsed.mean()
    half = scipy_stats.t.ppf(0.975, 10) * se
    assert (row["mean_lo"], row["mean_hi"]) == (
        pytest.approx(ratio - half),
        pytest.approx(ratio + half),
    )


def test_stability_verdicts() -> None:
    moved = 1 << 21
    steady = [(moved, t, True, 0) for t in (1000, 1010, 990, 1005, 995)]
    stalled = steady[:4] + [(moved, 1000 * 100, True, 0)]  # one move 100x slower
    noisy = [(moved, t, True, 0) for t in (1000, 1400, 700, 1200, 800)]
    few = steady[:2]
    frame = sample_frame(
        {"a": steady, "b": stalled, "c": noisy, "d": few, "e": [(moved, 5, False, 0)]}
    )
    rows = {r["copy_config"]: r for r in cell_statistics(frame, StabilityRule()).to_dict("records")}
    assert not rows["a"]["unstable"] and not rows["a"]["few"]
    assert rows["b"]["unstable"] and "of the median" in rows["b"]["reason"]
    assert rows["c"]["unstable"] and rows["c"]["reason"].startswith("CV ")
    assert rows["d"]["few"] and not rows["d"]["unstable"]
    assert rows["e"]["n"] == 0 and math.isnan(rows["e"]["mean"]) and not rows["e"]["unstable"]
    lenient = cell_statistics(frame, StabilityRule(cv_threshold=0.5, low_fraction=0.001))
    assert not lenient.set_index("copy_config").loc["c", "unstable"]


def cell(gbps: list[float], moved: int = 1 << 30) -> CellSamples:
    values = np.asarray(gbps, dtype=float)
    elapsed = moved / values
    return CellSamples(np.full(len(values), float(moved)), elapsed, values)


SPREAD = np.array([-0.03, -0.01, 0.01, 0.03])
OTHER_SPREAD = np.array([-0.02, -0.02, 0.02, 0.02])


def with_mean(mean: float, spread: np.ndarray = SPREAD) -> CellSamples:
    """Per-sample time per byte (1 + d) / mean: total bytes / total time is exactly mean."""
    return cell(list(mean / (1 + spread)))


def test_welch_clearly_different() -> None:
    a, b = with_mean(10.0), with_mean(5.0)
    difference = welch_difference(a, b, "mean")
    assert difference.ratio == pytest.approx(0.5)
    assert difference.change_percent == pytest.approx(-50.0)
    expected = scipy_stats.ttest_ind(
        a.elapsed_ns / a.moved_bytes, b.elapsed_ns / b.moved_bytes, equal_var=False
    ).pvalue
    assert difference.p_value == pytest.approx(expected)
    assert difference.p_value < 1e-5
    assert difference.ci_low < 0.5 < difference.ci_high < 0.6


def test_welch_clearly_equal() -> None:
    difference = welch_difference(with_mean(7.0), with_mean(7.0, OTHER_SPREAD), "mean")
    assert difference.ratio == pytest.approx(1.0)
    assert difference.p_value == pytest.approx(1.0)
    assert difference.ci_low < 1.0 < difference.ci_high


def test_welch_on_arithmetic_means_and_degenerate_cells() -> None:
    a = cell([5.0, 5.1, 4.9, 5.0])
    b = cell([6.0, 6.1, 5.9, 6.0])
    difference = welch_difference(a, b, "amean")
    assert difference.ratio == pytest.approx(6.0 / 5.0)
    assert difference.p_value == pytest.approx(
        scipy_stats.ttest_ind(a.gbps, b.gbps, equal_var=False).pvalue
    )
    assert math.isnan(welch_difference(cell([5.0]), b, "mean").p_value)
    assert welch_difference(cell([5.0, 5.0]), cell([5.0, 5.0]), "mean").p_value == 1.0
    assert welch_difference(cell([5.0, 5.0]), cell([6.0, 6.0]), "mean").p_value == 0.0
    with pytest.raises(ValueError):
        welch_difference(a, b, "median")


def test_bootstrap_verdicts() -> None:
    different = bootstrap_difference(with_mean(10.0), with_mean(5.0), "mean")
    assert different.ratio == pytest.approx(0.5)
    assert different.ci_high < 1.0 and different.p_value < 0.01
    equal = bootstrap_difference(with_mean(7.0), with_mean(7.0, OTHER_SPREAD), "median")
    assert equal.ci_low <= 1.0 <= equal.ci_high and equal.p_value > 0.5
    again = bootstrap_difference(with_mean(7.0), with_mean(7.0, OTHER_SPREAD), "median")
    assert again == equal  # seeded: the same input gives the same verdict


def test_multiple_comparison_corrections() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005, math.nan]
    holm = adjust_p_values(p_values, "holm")
    assert holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm[4])
    bh = adjust_p_values(p_values, "bh")
    assert bh[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_p_values(p_values, "none")[:4] == p_values[:4]
