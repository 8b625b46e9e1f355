"""Input checks, the sorted risk table and JSON conversion shared by the estimators.

Every estimator here works on the sorted unique times of one cohort: one O(n log n) sort, then
counts per unique time with ``np.add.reduceat``. Nothing downstream loops over patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def z_value(conf_level: float) -> float:
    """Two-sided normal quantile, as R's ``qnorm(1 - (1 - conf.int) / 2)``."""
    if not 0.0 < conf_level < 1.0:
        raise ValueError(f"conf_level must lie in (0, 1), got {conf_level!r}")
    return float(norm.ppf(1.0 - (1.0 - conf_level) / 2.0))


def as_times(time_days: ArrayLike) -> FloatArray:
    """Follow-up times as a 1-D float array; finite and >= 0 (cmprsk's ``cinc`` assumes y >= 0)."""
    t = np.asarray(time_days, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError("time_days must be one-dimensional")
    if not np.all(np.isfinite(t)):
        raise ValueError("time_days must be finite (no NaN or inf)")
    if t.size and t.min() < 0:
        raise ValueError("time_days must be >= 0")
    return t


def as_status(status: ArrayLike, n: int, name: str = "status") -> IntArray:
    """Integer status codes (0 = censored), the same length as the times."""
    raw = np.asarray(status)
    if raw.shape != (n,):
        raise ValueError(f"{name} must be one-dimensional with the same length as time_days")
    if raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
        raise ValueError(f"{name} must hold integer codes")
    return raw.astype(np.int64)


def as_event(event: ArrayLike, n: int) -> IntArray:
    """0/1 endpoint indicator. Anything else is refused, so a raw 0/1/2 status is never taken for it."""
    e = as_status(event, n, name="event")
    if e.size and not np.all((e == 0) | (e == 1)):
        raise ValueError("event must be 0/1 (or boolean); pass status == 1 for the endpoint")
    return e


def as_horizons(horizons_days: ArrayLike) -> FloatArray:
    h = np.atleast_1d(np.asarray(horizons_days, dtype=np.float64))
    if h.ndim != 1 or not np.all(np.isfinite(h)):
        raise ValueError("horizons_days must be a 1-D array of finite numbers")
    return h


@dataclass(frozen=True)
class RiskTable:
    """Counts per sorted unique time.

    ``n_risk[j]`` is the number with time >= ``time[j]`` (censored at ``time[j]`` still count),
    as in R's ``survfit`` and cmprsk's ``cinc`` (``rs = n - l``).
    """

    time: FloatArray
    n_risk: IntArray
    counts: dict[str, IntArray]
    sorted_time: FloatArray


def risk_table(time: FloatArray, **indicators: NDArray[np.int64]) -> RiskTable:
    """Sort once and sum each 0/1 indicator over the patients sharing a time."""
    order = np.argsort(time, kind="stable")
    ts = time[order]
    n = ts.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return RiskTable(ts, empty, {k: empty for k in indicators}, ts)
    starts = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))
    n_at_time = np.diff(np.append(starts, n))
    n_risk = n - np.concatenate(([0], np.cumsum(n_at_time)[:-1]))
    counts = {k: np.add.reduceat(v[order].astype(np.int64), starts) for k, v in indicators.items()}
    return RiskTable(ts[starts], n_risk.astype(np.int64), counts, ts)


def n_at_risk_at(sorted_time: FloatArray, horizons: FloatArray) -> IntArray:
    """Number with time >= horizon: R's ``summary.survfit(times=, extend=TRUE)$n.risk``."""
    return (sorted_time.size - np.searchsorted(sorted_time, horizons, side="left")).astype(np.int64)


def last_at_or_before(jump_times: FloatArray, horizons: FloatArray) -> IntArray:
    """Index of the last jump time <= horizon, -1 when there is none (the curve's starting value)."""
    return np.searchsorted(jump_times, horizons, side="right") - 1


def to_floats(x: NDArray[np.float64]) -> list[float | None]:
    """Plain Python floats for JSON; NaN/inf (R's NA/NaN) become None."""
    a = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(a)
    if finite.all():
        return a.tolist()  # tolist gives Python floats, in C
    out = a.astype(object)
    out[~finite] = None
    return out.tolist()


def to_ints(x: NDArray[np.int64]) -> list[int]:
    return np.asarray(x, dtype=np.int64).tolist()


def group_codes(group: ArrayLike, n: int) -> tuple[list[object], IntArray]:
    """Sorted group labels (as R's ``factor`` levels) and each patient's 0-based code."""
    g = np.asarray(group)
    if g.shape != (n,):
        raise ValueError("group must be one-dimensional with the same length as time_days")
    labels, codes = np.unique(g, return_inverse=True)
    return [v.item() if hasattr(v, "item") else v for v in labels], codes.astype(np.int64)
