"""Per-cell statistics, stability verdicts and two-sample tests.

A cell is every sample of one (host, page kind, load, workqueue, kernel variant, copy config,
page count). Throughput statistics:

- mean: total bytes / total time of the cell's samples. This is what the thread's scripts
  compute (they average the times); for equal-sized moves it is the harmonic mean of the
  per-sample GB/s, so one very slow move pulls it down hard.
- amean: the arithmetic mean of per-sample GB/s.
- median, min, max of per-sample GB/s.

Confidence intervals: mean uses the delta method for a ratio of sums with a t quantile,
amean a t interval, median the distribution-free order-statistic interval; min and max
have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special as scipy_special
from scipy import stats as scipy_stats

Statistic = Literal["mean", "amean", "median", "min", "max"]
STATISTICS: tuple[Statistic, ...] = ("mean", "amean", "median", "min", "max")
STATISTICS_WITH_CI: tuple[Statistic, ...] = ("mean", "amean", "median")

STATISTIC_DESCRIPTIONS: dict[str, str] = {
    "mean": (
        "mean GB/s = total bytes / total time of the cell's samples (the thread's statistic; "
        "for equal-sized moves the harmonic mean of per-sample GB/s)"
    ),
    "amean": "arithmetic mean of per-sample GB/s",
    "median": "median of per-sample GB/s",
    "min": "slowest sample's GB/s",
    "max": "fastest sample's GB/s",
}

# One line under every table says which statistic its cells show.
STATISTIC_SHORT: dict[str, str] = {
    "mean": "mean = total bytes / total time of the samples (harmonic mean of per-sample GB/s)",
    "amean": "amean = arithmetic mean of per-sample GB/s",
    "median": "median of per-sample GB/s",
    "min": "min = slowest sample",
    "max": "max = fastest sample",
}

CELL_KEYS: tuple[str, ...] = (
    "host",
    "page_kind",
    "load",
    "workqueue",
    "kernel_variant",
    "copy_config",
    "page_count",
)


@dataclass(frozen=True)
class StabilityRule:
    """When a cell's number should not be trusted on its own.

    cv_threshold: coefficient of variation (sd / arithmetic mean of per-sample GB/s) above
    which the cell is unstable. low_fraction: a sample below this fraction of the cell's
    median (the thread's 0.02 GB/s next to 5 GB/s) makes it unstable. min_samples: fewer
    usable samples than this and no verdict is possible.
    """

    cv_threshold: float = 0.15
    low_fraction: float = 0.25
    min_samples: int = 3

    def describe(self) -> str:
        return f"CV > {self.cv_threshold:.0%} or a sample < {self.low_fraction:.0%} of the median"


def usable_samples(frame: pd.DataFrame) -> np.ndarray:
    """Samples that count: the folios had the requested size and every page moved."""
    return np.asarray(frame["backing_ok"].to_numpy(dtype=bool) & (frame["failed_pages"] == 0))


def _t_quantile(confidence: float, dof: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        quantile = scipy_stats.t.ppf(0.5 + confidence / 2, np.where(dof > 0, dof, np.nan))
    return np.asarray(quantile, dtype=float)


def group_codes(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group number of every row, and one row of key values per group (in group order).

    The same grouping as frame.groupby(keys, observed=True, dropna=False), computed from
    the categorical codes with one integer sort: a million rows in a fraction of the time.
    Missing values form their own group."""
    combined = np.zeros(len(frame), dtype=np.int64)
    decoders = []
    for key in keys:
        column = frame[key]
        if isinstance(column.dtype, pd.CategoricalDtype):
            values = column.cat.codes.to_numpy().astype(np.int64) + 1  # missing: -1 -> 0
            labels = np.array([None, *column.cat.categories], dtype=object)
        else:
            missing = column.isna().to_numpy()
            uniques, inverse = np.unique(column.to_numpy()[~missing], return_inverse=True)
            values = np.zeros(len(frame), dtype=np.int64)
            values[~missing] = inverse + 1
            labels = np.array([None, *uniques.tolist()], dtype=object)
        radix = len(labels)
        combined = combined * radix + values
        decoders.append((key, labels, radix))
    unique_keys, codes = np.unique(combined, return_inverse=True)
    columns: dict[str, object] = {}
    remainder = unique_keys
    for key, labels, radix in reversed(decoders):
        columns[key] = labels[remainder % radix]
        remainder = remainder // radix
    groups = pd.DataFrame({key: columns[key] for key in keys})
    for key in keys:  # keep the frame's dtypes (categoricals stay categoricals)
        dtype = frame[key].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            groups[key] = pd.Categorical(groups[key], categories=dtype.categories)
        elif not groups[key].isna().any():
            groups[key] = groups[key].astype(dtype)
    return np.asarray(codes, dtype=np.int64).reshape(-1), groups


def cell_statistics(
    frame: pd.DataFrame,
    rule: StabilityRule | None = None,
    confidence: float = 0.95,
    keys: Sequence[str] = CELL_KEYS,
    key_frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per cell present in `frame` (usable or not): sample counts, every statistic
    over the usable samples, confidence intervals and the stability verdict.

    key_frame, if given, holds the `keys` columns to group by instead of frame's own (same
    index), e.g. with the vanilla kernels' variant and workqueue merged into one cell."""
    rule = rule or StabilityRule()
    key_list = list(keys)
    source = frame if key_frame is None else key_frame
    codes, result = group_codes(source, key_list)
    groups = len(result)
    result["samples"] = np.bincount(codes, minlength=groups).astype(np.int64)
    usable = usable_samples(frame)
    backing_bad = ~frame["backing_ok"].to_numpy(dtype=bool)
    failed = (frame["failed_pages"] > 0).to_numpy()
    gbps = frame["gbps"].to_numpy(dtype=float)
    moved = frame["bytes"].to_numpy(dtype=float)
    elapsed = frame["elapsed_ns"].to_numpy(dtype=float)

    def per_cell(weights: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=groups)

    weight = usable.astype(float)
    n = per_cell(weight)
    result["n"] = n.astype(np.int64)
    result["excluded"] = result["samples"] - result["n"]
    result["excluded_backing"] = per_cell(backing_bad.astype(float)).astype(np.int64)
    result["excluded_failed"] = per_cell((failed & ~backing_bad).astype(float)).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bytes_sum = per_cell(moved * weight)
        time_sum = per_cell(elapsed * weight)
        ratio = bytes_sum / time_sum  # bytes per ns = GB/s
        amean = per_cell(gbps * weight) / n
        spread = gbps - amean[codes]
        variance = per_cell(spread * spread * weight) / (n - 1)
        std = np.sqrt(variance)
        residual = moved - ratio[codes] * elapsed
        ratio_se = np.sqrt(per_cell(residual * residual * weight) / (n - 1) / n) / (time_sum / n)
        t_quantile = _t_quantile(confidence, n - 1)
    result["mean"] = ratio
    result["amean"] = amean
    result["std"] = np.where(n >= 2, std, np.nan)
    result["cv"] = np.where(n >= 2, std / amean, np.nan)
    # Copy threads the kernel really used (records of kernels that count them): the mean
    # over the usable samples that have the number; NaN where none has.
    if "threads_effective" in frame.columns:
        effective = frame["threads_effective"].to_numpy(dtype=float)
        known = usable & ~np.isnan(effective)
        with np.errstate(invalid="ignore", divide="ignore"):
            result["threads_effective"] = per_cell(np.where(known, effective, 0.0)) / per_cell(
                known.astype(float)
            )
    else:
        result["threads_effective"] = np.nan
    result["mean_lo"] = ratio - t_quantile * ratio_se
    result["mean_hi"] = ratio + t_quantile * ratio_se
    result["amean_lo"] = amean - t_quantile * std / np.sqrt(n)
    result["amean_hi"] = amean + t_quantile * std / np.sqrt(n)

    # Order statistics: usable samples first within each cell, ascending GB/s.
    order = np.lexsort((gbps, ~usable, codes))
    ordered = gbps[order]
    starts = np.concatenate(([0], np.cumsum(result["samples"].to_numpy())[:-1]))
    count = n.astype(np.int64)
    has = count > 0
    safe_count = np.maximum(count, 1)
    low_index = starts + (safe_count - 1) // 2
    high_index = starts + safe_count // 2
    result["median"] = np.where(has, (ordered[low_index] + ordered[high_index]) / 2, np.nan)
    result["min"] = np.where(has, ordered[starts], np.nan)
    result["max"] = np.where(has, ordered[starts + safe_count - 1], np.nan)
    # Distribution-free interval for the median: ranks from Binomial(n, 1/2).
    rank = scipy_stats.binom.ppf((1 - confidence) / 2, safe_count, 0.5).astype(np.int64)
    lower_rank = np.clip(rank - 1, 0, safe_count - 1)
    upper_rank = np.clip(safe_count - rank, 0, safe_count - 1)
    result["median_lo"] = np.where(has, ordered[starts + lower_rank], np.nan)
    result["median_hi"] = np.where(has, ordered[starts + upper_rank], np.nan)
    for column in ("mean", "amean", "median"):
        too_few = count < 2
        result.loc[too_few, f"{column}_lo"] = np.nan
        result.loc[too_few, f"{column}_hi"] = np.nan

    few = count < rule.min_samples
    high_cv = (result["cv"] > rule.cv_threshold).to_numpy()
    low_sample = (result["min"] < rule.low_fraction * result["median"]).to_numpy()
    result["few"] = has & few
    result["unstable"] = has & ~few & (high_cv | low_sample)
    result["reason"] = [
        _instability_reason(cv, low, minimum, median, rule) if flagged else ""
        for flagged, cv, low, minimum, median in zip(
            result["unstable"],
            result["cv"],
            low_sample,
            result["min"],
            result["median"],
            strict=True,
        )
    ]
    return result


def format_gbps(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 so that 0.002 does not read 0.00."""
    if abs(value) >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def format_percent(fraction: float) -> str:
    if abs(fraction) >= 0.01 or fraction == 0:
        return f"{fraction:.0%}"
    return f"{fraction * 100:.2g}%"


def _instability_reason(
    cv: float, low_sample: bool, minimum: float, median: float, rule: StabilityRule
) -> str:
    reasons = []
    if cv > rule.cv_threshold:
        reasons.append(f"CV {format_percent(cv)}")
    if low_sample:
        reasons.append(
            f"a sample at {format_gbps(minimum)} GB/s is {format_percent(minimum / median)} "
            "of the median"
        )
    return ", ".join(reasons)


def ci_columns(statistic: Statistic) -> tuple[str, str] | None:
    if statistic in STATISTICS_WITH_CI:
        return f"{statistic}_lo", f"{statistic}_hi"
    return None


# Two-sample comparison --------------------------------------------------------------------

Test = Literal["welch", "bootstrap"]
TEST_DESCRIPTIONS: dict[str, str] = {
    "welch": (
        "Welch's t-test (unequal variances) on per-sample time per byte for mean, on "
        "per-sample GB/s for amean; ratio CI by the delta method"
    ),
    "bootstrap": "bootstrap (resampling each cell's samples); percentile CI of the ratio",
}


@dataclass(frozen=True)
class CellSamples:
    """The usable samples of one cell."""

    moved_bytes: np.ndarray
    elapsed_ns: np.ndarray
    gbps: np.ndarray

    def __len__(self) -> int:
        return len(self.gbps)

    def statistic(self, statistic: Statistic) -> float:
        if len(self) == 0:
            return float("nan")
        if statistic == "mean":
            return float(self.moved_bytes.sum() / self.elapsed_ns.sum())
        if statistic == "amean":
            return float(self.gbps.mean())
        if statistic == "median":
            return float(np.median(self.gbps))
        if statistic == "min":
            return float(self.gbps.min())
        return float(self.gbps.max())


@dataclass(frozen=True)
class Difference:
    """B's statistic over A's, with a confidence interval and a p-value (nan if untestable)."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def change_percent(self) -> float:
        return (self.ratio - 1) * 100


def welch_difference(
    a: CellSamples, b: CellSamples, statistic: Statistic, confidence: float = 0.95
) -> Difference:
    """Welch's t-test. For `mean` (total bytes / total time) the per-sample variable is time
    per byte, whose mean is exactly the reciprocal of that statistic."""
    if statistic == "mean":
        a_values, b_values = a.elapsed_ns / a.moved_bytes, b.elapsed_ns / b.moved_bytes
    elif statistic == "amean":
        a_values, b_values = a.gbps, b.gbps
    else:
        raise ValueError(f"Welch's t-test compares means, not the {statistic}")
    a_mean, b_mean = float(a_values.mean()), float(b_values.mean())
    # throughput ratio B/A: for time per byte the ratio inverts
    ratio = a_mean / b_mean if statistic == "mean" else b_mean / a_mean
    if len(a) < 2 or len(b) < 2:
        return Difference(ratio, float("nan"), float("nan"), float("nan"))
    a_var, b_var = float(a_values.var(ddof=1)), float(b_values.var(ddof=1))
    if a_var == 0 and b_var == 0:
        p_value = 1.0 if a_mean == b_mean else 0.0
        return Difference(ratio, ratio, ratio, p_value)
    # Welch's t statistic and degrees of freedom on the per-sample values; the two-sided
    # p-value from Student's t distribution function (scipy.special: scipy.stats' per-call
    # overhead dominated a report's comparisons)
    a_se2, b_se2 = a_var / len(a), b_var / len(b)
    t_value = (a_mean - b_mean) / np.sqrt(a_se2 + b_se2)
    t_dof = (a_se2 + b_se2) ** 2 / (a_se2**2 / (len(a) - 1) + b_se2**2 / (len(b) - 1))
    p_value = float(2 * scipy_special.stdtr(t_dof, -abs(t_value)))
    # delta method on the log ratio, Welch-Satterthwaite degrees of freedom
    a_term = a_var / (len(a) * a_mean**2)
    b_term = b_var / (len(b) * b_mean**2)
    se_log = np.sqrt(a_term + b_term)
    dof = (a_term + b_term) ** 2 / (a_term**2 / (len(a) - 1) + b_term**2 / (len(b) - 1))
    quantile = float(scipy_special.stdtrit(dof, 0.5 + confidence / 2))
    return Difference(
        ratio,
        float(ratio * np.exp(-quantile * se_log)),
        float(ratio * np.exp(quantile * se_log)),
        p_value,
    )


def _resampled_statistic(
    cell: CellSamples, statistic: Statistic, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    picks = rng.integers(0, len(cell), size=(resamples, len(cell)))
    if statistic == "mean":
        return np.asarray(cell.moved_bytes[picks].sum(axis=1) / cell.elapsed_ns[picks].sum(axis=1))
    values = cell.gbps[picks]
    if statistic == "amean":
        return np.asarray(values.mean(axis=1))
    if statistic == "median":
        return np.asarray(np.median(values, axis=1))
    raise ValueError(f"the bootstrap is not reliable for the {statistic}")


def bootstrap_difference(
    a: CellSamples,
    b: CellSamples,
    statistic: Statistic,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Difference:
    ratio = b.statistic(statistic) / a.statistic(statistic)
    if len(a) < 2 or len(b) < 2:
        return Difference(ratio, float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    ratios = _resampled_statistic(b, statistic, rng, resamples) / _resampled_statistic(
        a, statistic, rng, resamples
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    at_or_below = int((ratios <= 1).sum())
    at_or_above = int((ratios >= 1).sum())
    p_value = min(1.0, (2 * min(at_or_below, at_or_above) + 1) / (resamples + 1))
    return Difference(ratio, float(low), float(high), p_value)


Correction = Literal["holm", "bh", "none"]
CORRECTION_DESCRIPTIONS: dict[str, str] = {
    "holm": "Holm's correction for the number of cells compared (family-wise error)",
    "bh": "Benjamini-Hochberg correction (false discovery rate)",
    "none": "no correction for multiple comparisons",
}


def adjust_p_values(p_values: Sequence[float], correction: Correction) -> list[float]:
    """Adjusted p-values; nan (untestable cells) stays nan and does not count."""
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(values), np.nan)
    testable = np.flatnonzero(~np.isnan(values))
    m = len(testable)
    if m == 0 or correction == "none":
        return values.tolist()
    order = testable[np.argsort(values[testable], kind="stable")]
    sorted_p = values[order]
    if correction == "holm":
        steps = np.maximum.accumulate(sorted_p * (m - np.arange(m)))
    else:
        steps = np.minimum.accumulate((sorted_p * m / np.arange(1, m + 1))[::-1])[::-1]
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted.tolist()
