"""Exact Aalen-Johansen cumulative incidence with cmprsk's variance, vectorised.

A port of cmprsk 2.2-11 (Gray): the Fortran routine ``cinc`` (src/cincsub.f) that ``cuminc`` calls,
and ``timepoints`` (src/tpoi.f) for reading the curve at fixed times. ``cinc`` walks the sorted
times once; every quantity it carries is a cumulative sum or product over the unique times, so here
it is a handful of numpy cumsum/cumprod calls: O(n log n) for the sort, then linear.

lifelines' AalenJohansenFitter is not used: it jitters tied times at random, so on day-grid visit
data it is neither exact nor deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import (
    FloatArray,
    as_horizons,
    as_status,
    as_times,
    last_at_or_before,
    n_at_risk_at,
    risk_table,
    to_floats,
    to_ints,
    z_value,
)
from .results import CumulativeIncidence, HorizonEstimates, StepCurve


@dataclass(frozen=True)
class _CincFit:
    jump_time: FloatArray  # unique times with a cause-of-interest event (cinc's x, deduplicated)
    estimate: FloatArray  # F just after each jump
    variance: FloatArray  # cinc's v at each jump
    jump_n_risk: FloatArray
    last_time: float | None  # cinc: "the last element of x and f continue out to the largest follow-up time"
    sorted_time: FloatArray


def _tie_factor(d: FloatArray, rs: FloatArray) -> FloatArray:
    """cinc's t5: 1 - (d - 1) / (rs - 1) for d > 1 tied events, else 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 1, 1.0 - (d - 1.0) / (rs - 1.0), 1.0)


def _cinc(time: FloatArray, status: np.ndarray, cause: int) -> _CincFit:
    """cmprsk's ``cinc`` over the sorted unique times (variable names follow the Fortran)."""
    rt = risk_table(time, d1=(status == cause), d2=(status != 0) & (status != cause))
    if rt.time.size == 0:
        empty = np.zeros(0)
        return _CincFit(empty, empty, empty, empty, None, rt.sorted_time)
    rs = rt.n_risk.astype(np.float64)
    nd1, nd2 = rt.counts["d1"].astype(np.float64), rt.counts["d2"].astype(np.float64)
    # fk: all-cause KM just before each time; fkn: just after (fkn = fk * (rs - nd) / rs).
    fkn = np.cumprod((rs - (nd1 + nd2)) / rs)
    fk = np.concatenate(([1.0], fkn[:-1]))
    f = np.cumsum(fk * nd1 / rs)
    with np.errstate(divide="ignore", invalid="ignore"):
        t3_all = np.where(fkn > 0, 1.0 / fkn, 0.0)
    # Competing-cause term, skipped by cinc when nd2 = 0 or fkn <= 0.
    comp = (nd2 > 0) & (fkn > 0)
    t6 = np.where(comp, fk * fk * _tie_factor(nd2, rs) * nd2 / (rs * rs), 0.0)
    t4 = f * t3_all
    v1 = t4 * t4 * t6
    v2 = t3_all * t4 * t6
    v3 = t3_all * t3_all * t6
    # Cause-of-interest term (t3 = 0 when fkn = 0, as in cinc).
    own = nd1 > 0
    t6 = np.where(own, fk * fk * _tie_factor(nd1, rs) * nd1 / (rs * rs), 0.0)
    t4 = 1.0 + t3_all * f
    v1 = np.cumsum(v1 + t4 * t4 * t6)
    v2 = np.cumsum(v2 + t3_all * t4 * t6)
    v3 = np.cumsum(v3 + t3_all * t3_all * t6)
    # cinc stores v only at cause-of-interest jumps, so later competing events reach the reported
    # variance only at the next jump: kept as is, to match cuminc.
    var = v1 + f * f * v3 - 2.0 * f * v2
    return _CincFit(rt.time[own], f[own], var[own], rs[own], float(rt.time[-1]), rt.sorted_time)


def loglog_ci_cuminc(f: FloatArray, var: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    """log(-log) CI on F: F^exp(-+z sqrt(var) / (F log F)). log F < 0, so '-' gives the lower bound.

    Computed as R computes it (F = 0 gives NaN, i.e. None; F = 1 gives 1 to 1).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = z * np.sqrt(var) / (f * np.log(f))
        return f ** np.exp(-k), f ** np.exp(k)


def cumulative_incidence(
    time_days: ArrayLike,
    status: ArrayLike,
    horizons_days: ArrayLike,
    cause: int = 1,
    conf_level: float = 0.95,
) -> CumulativeIncidence:
    """Aalen-Johansen cumulative incidence of ``cause`` with competing risks.

    Matches R's cmprsk: ``ci <- cuminc(time, status, cencode = 0)``; ``timepoints(ci, horizons)``
    gives the estimate and variance at each horizon (the value at the last jump at or before it;
    NA beyond the largest follow-up time); the CI is log(-log) on F (see ``loglog_ci_cuminc``).
    Status 0 is censored; every other nonzero code is a competing event.

    Returns the horizon table and the full step curve (one point per unique time with a ``cause``
    event: estimate just after the jump, cmprsk variance, CI, number at risk just before).
    """
    t = as_times(time_days)
    s = as_status(status, t.size)
    fit = _cinc(t, s, cause)
    z = z_value(conf_level)
    h = as_horizons(horizons_days)
    idx = last_at_or_before(fit.jump_time, h)
    f_pad = np.concatenate(([0.0], fit.estimate))  # index 0: before the first jump, F = var = 0
    v_pad = np.concatenate(([0.0], fit.variance))
    est, var = f_pad[idx + 1], v_pad[idx + 1]
    # tpoi: NA beyond the last follow-up time (and for horizons before time 0).
    undefined = (h > fit.last_time) | (h < 0) if fit.last_time is not None else np.ones(h.size, bool)
    est, var = np.where(undefined, np.nan, est), np.where(undefined, np.nan, var)
    lower, upper = loglog_ci_cuminc(est, var, z)
    c_lower, c_upper = loglog_ci_cuminc(fit.estimate, fit.variance, z)
    return CumulativeIncidence(
        cause=int(cause),
        at_horizons=HorizonEstimates(
            horizons_days=[float(v) for v in h],
            estimate=to_floats(est),
            variance=to_floats(var),
            lower=to_floats(lower),
            upper=to_floats(upper),
            n_at_risk=to_ints(n_at_risk_at(fit.sorted_time, h)),
        ),
        curve=StepCurve(
            time_days=[float(v) for v in fit.jump_time],
            estimate=to_floats(fit.estimate),
            variance=to_floats(fit.variance),
            lower=to_floats(c_lower),
            upper=to_floats(c_upper),
            n_at_risk=to_ints(fit.jump_n_risk),
            last_time_days=fit.last_time,
        ),
    )
