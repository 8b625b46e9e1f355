"""Kaplan-Meier for the endpoint (competing events censored), reported as 1 - KM, and its median.

Ported from R's survival package (3.5): ``survfit(..., conf.type = "log-log")``, read at fixed
times with ``summary(fit, times =, extend = TRUE)``, and the median of ``print(fit)``
(``survival:::survmean``). Integer-day times need none of survfit's ``aeqSurv`` tie fixing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import (
    FloatArray,
    as_event,
    as_horizons,
    as_times,
    last_at_or_before,
    n_at_risk_at,
    risk_table,
    to_floats,
    to_ints,
    z_value,
)
from .results import HorizonEstimates, MedianTime


@dataclass(frozen=True)
class _KMFit:
    time: FloatArray  # every unique time, censored or not, as survfit's $time
    surv: FloatArray
    se_log: FloatArray  # survfit's $std.err: Greenwood standard error of log S (inf once S = 0)
    lower: FloatArray  # log(-log) CI on S; NaN where S is 0 or 1, as survfit
    upper: FloatArray
    sorted_time: FloatArray


def loglog_ci_surv(surv: FloatArray, se_log: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    """survival:::survfit_confint, conf.type = "log-log": NaN (R's NA) where S is 0 or 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        xx = np.where((surv == 0) | (surv == 1), np.nan, surv)
        se2 = z * se_log / np.log(xx)
        lower = np.exp(-np.exp(np.log(-np.log(xx)) - se2))
        upper = np.exp(-np.exp(np.log(-np.log(xx)) + se2))
    return lower, upper


def _fit(time_days: ArrayLike, event: ArrayLike, conf_level: float) -> _KMFit:
    t = as_times(time_days)
    e = as_event(event, t.size)
    rt = risk_table(t, d=e)
    n, d = rt.n_risk.astype(np.float64), rt.counts["d"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod((n - d) / n)
        # Greenwood on the log scale, as survfit's $std.err: sum d / (n (n - d)); inf when n = d.
        se_log = np.sqrt(np.cumsum(np.where(d > 0, d / (n * (n - d)), 0.0)))
    lower, upper = loglog_ci_surv(surv, se_log, z_value(conf_level))
    return _KMFit(rt.time, surv, se_log, lower, upper, rt.sorted_time)


def one_minus_km(
    time_days: ArrayLike,
    event: ArrayLike,
    horizons_days: ArrayLike,
    conf_level: float = 0.95,
) -> HorizonEstimates:
    """1 - Kaplan-Meier at each horizon, competing events counted as censored.

    Matches R: ``s <- summary(survfit(Surv(time, event) ~ 1, conf.type = "log-log"),
    times = horizons, extend = TRUE)``: estimate ``1 - s$surv``, variance ``s$std.err^2`` (Greenwood,
    the same for S and 1 - S), ``lower = 1 - s$upper``, ``upper = 1 - s$lower``, ``n_at_risk = s$n.risk``.
    Horizons beyond the largest time in the data give None (the estimate is not defined there).
    As in R, the CI is None where S is 0 or 1, except before the first observed time, where R reports
    the starting point (1, 1), i.e. 0 to 0 here.

    Args:
        time_days: follow-up time per patient, >= 0.
        event: 1 (or True) if the patient reached the endpoint at that time, else 0.
        horizons_days: times at which to read the curve, in days.
        conf_level: confidence level of the CI (R's conf.int).
    """
    fit = _fit(time_days, event, conf_level)
    h = as_horizons(horizons_days)
    idx = last_at_or_before(fit.time, h)
    before = idx < 0
    j = np.maximum(idx, 0)
    if fit.time.size == 0:
        surv = var = lo_s = up_s = np.full(h.size, np.nan)
    else:
        surv = np.where(before, 1.0, fit.surv[j])
        with np.errstate(invalid="ignore"):
            # summary.survfit's std.err is S * std.err(log S): NaN once S = 0 (0 * inf).
            var = np.where(before, 0.0, (fit.surv[j] * fit.se_log[j]) ** 2)
        lo_s = np.where(before, 1.0, fit.lower[j])
        up_s = np.where(before, 1.0, fit.upper[j])
    beyond = h > fit.time[-1] if fit.time.size else np.ones(h.size, dtype=bool)
    est, var, lower, upper = (np.where(beyond, np.nan, x) for x in (1.0 - surv, var, 1.0 - up_s, 1.0 - lo_s))
    return HorizonEstimates(
        horizons_days=[float(v) for v in h],
        estimate=to_floats(est),
        variance=to_floats(var),
        lower=to_floats(lower),
        upper=to_floats(upper),
        n_at_risk=to_ints(n_at_risk_at(fit.sorted_time, h)),
    )


def _first_below_half(y: FloatArray, x: FloatArray) -> float | None:
    """survival:::survmean's ``minmin``: the first time the survival curve y is <= 0.5 (to sqrt(eps));
    if it sits exactly at 0.5 and later drops, the midpoint to the time it drops below."""
    tol = np.sqrt(np.finfo(np.float64).eps)
    keep = ~np.isnan(y) & (y < 0.5 + tol)
    if not keep.any():
        return None
    x, y = x[keep], y[keep]
    later_lower = np.flatnonzero(y < y[0])
    if abs(y[0] - 0.5) < tol and later_lower.size:
        return float((x[0] + x[later_lower[0]]) / 2)
    return float(x[0])


def median_time(time_days: ArrayLike, event: ArrayLike, conf_level: float = 0.95) -> MedianTime:
    """Median time to endpoint (1 - KM reaching 0.5) with the CI R prints for a survfit.

    Matches ``print(survfit(Surv(time, event) ~ 1, conf.type = "log-log"))``'s median, 0.95LCL and
    0.95UCL (``survival:::survmean``): the first time S <= 0.5 (midpoint rule when S is exactly 0.5
    on an interval); the limits are the first times the lower / upper log(-log) curves of S reach 0.5.
    None where a curve never reaches 0.5 (R's NA; the CI curves are NA where S is 0 or 1).
    Note: ``quantile(fit, 0.5)`` differs from ``print(fit)`` only when S stays at exactly 0.5 until
    the last time (quantile takes the midpoint to the last time, print the first time); this follows print.
    """
    fit = _fit(time_days, event, conf_level)
    return MedianTime(
        median=_first_below_half(fit.surv, fit.time),
        lower=_first_below_half(fit.lower, fit.time),
        upper=_first_below_half(fit.upper, fit.time),
    )
