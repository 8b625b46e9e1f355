"""K-sample tests: log-rank (lifelines, as survival::survdiff) and Gray's test (cmprsk::cuminc $Tests,
no library has it exactly: ported here over the sorted unique times with per-group count matrices of
shape (times, groups), one sort plus O(times x groups^2) array arithmetic).
"""

from __future__ import annotations

import numpy as np
from lifelines.statistics import multivariate_logrank_test
from numpy.typing import ArrayLike
from scipy.linalg import qr
from scipy.stats import chi2

from ._arrays import FloatArray, as_event, as_status, as_times, group_codes
from .results import GroupTest


def _counts_by_group(
    time: FloatArray, codes: np.ndarray, ng: int, **indicators: np.ndarray
) -> tuple[FloatArray, dict[str, FloatArray]]:
    """Per unique time (rows) and group (columns): the number at risk (time >= t) and each indicator's
    count at t."""
    order = np.argsort(time, kind="stable")
    ts, gs = time[order], codes[order]
    is_start = np.concatenate(([True], ts[1:] != ts[:-1])) if ts.size else np.zeros(0, bool)
    cell = (np.cumsum(is_start) - 1) * ng + gs
    n_times = int(is_start.sum())

    def table(weights: np.ndarray | None) -> FloatArray:
        w = None if weights is None else weights[order].astype(np.float64)
        return np.bincount(cell, weights=w, minlength=n_times * ng).reshape(n_times, ng).astype(np.float64)

    at_time = table(None)
    n_risk = np.cumsum(at_time[::-1], axis=0)[::-1]
    return n_risk, {k: table(v) for k, v in indicators.items()}


def _chisq_p(stat: float, df: int) -> float:
    return float(chi2.sf(stat, df))


def logrank(time_days: ArrayLike, event: ArrayLike, group: ArrayLike) -> GroupTest:
    """Log-rank test of equal hazards of the endpoint across two or more groups.

    lifelines' ``multivariate_logrank_test`` (exact; equals R's ``survdiff(Surv(time, event) ~ group)``),
    with survdiff's handling of groups that never have a patient at risk at an event time: they
    have zero expected events and are left out (which changes nothing else: they are in no risk
    set), and df = (groups with expected > 0) - 1. Statistic and p are None when fewer than two
    groups remain (R: chisq 0 with p 1 or NaN).
    """
    t = as_times(time_days)
    e = as_event(event, t.size)
    labels, codes = group_codes(group, t.size)
    if not e.any():
        return GroupTest("logrank", labels, None, 0, None)
    first_event = t[e == 1].min()
    # A group has expected > 0 exactly when one of its patients is at risk at some event time.
    last_by_group = np.full(len(labels), -np.inf)
    np.maximum.at(last_by_group, codes, t)
    kept = np.flatnonzero(last_by_group >= first_event)
    df = int(kept.size) - 1
    if df < 1:
        return GroupTest("logrank", labels, None, max(df, 0), None)
    rows = np.isin(codes, kept)
    result = multivariate_logrank_test(t[rows], codes[rows], e[rows])
    stat = float(result.test_statistic)
    return GroupTest("logrank", labels, stat, df, _chisq_p(stat, df))


def _gray_score_var(
    time: FloatArray, m: np.ndarray, codes: np.ndarray, ng: int, rho: float
) -> tuple[FloatArray, FloatArray]:
    """cmprsk's ``crst`` (src/crstm.f) for one stratum: scores s (ng-1) and their covariance v.

    m is 0 censored, 1 the cause of interest, 2 any other cause. The Fortran loops over unique
    times carrying left-continuous per-group KM (skmm) and cumulative incidence (f1m), a pooled
    cumulative incidence (fm), and running sums c, v2, v3; each is a cumulative sum/product here.
    Variable names follow the Fortran.
    """
    rs_all, cnt = _counts_by_group(time, codes, ng, d1=(m == 1), d2=(m == 2))
    ev = (cnt["d1"] + cnt["d2"]).sum(axis=1) > 0  # times without failures change nothing
    rs, d1, d2 = rs_all[ev], cnt["d1"][ev], cnt["d2"][ev]
    nd1 = d1.sum(axis=1)
    active = rs > 0
    rs_safe = np.where(active, rs, 1.0)
    # Per-group KM (all causes) and cumulative incidence, left (skmm, f1m) and right (skm) continuous.
    ratio = np.where(active, (rs - d1 - d2) / rs_safe, 1.0)
    skm = np.cumprod(ratio, axis=0)
    skmm = np.vstack([np.ones((1, ng)), skm[:-1]])
    f1_step = np.where(active, skmm * d1 / rs_safe, 0.0)
    f1m = np.cumsum(f1_step, axis=0) - f1_step
    # skmm > 0 while a group is still at risk; a finished group's 0 must not reach a denominator.
    skmm_safe = np.where(active, skmm, 1.0)
    t1 = np.where(active, rs / skmm_safe, 0.0)
    tr = t1.sum(axis=1)
    tq = np.where(active, rs * (1.0 - f1m) / skmm_safe, 0.0).sum(axis=1)
    f = np.cumsum(nd1 / tr)
    fm = f - nd1 / tr
    fb = (1.0 - fm) ** rho
    # a: the Fortran's a(i,j) = fb * t1_i * (delta_ij - t1_j / tr); c accumulates a * nd1 / (tr (1 - fm)).
    eye = np.eye(ng)
    a = fb[:, None, None] * (t1[:, :, None] * eye - t1[:, :, None] * t1[:, None, :] / tr[:, None, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        # cmprsk 2.2-12 adds "if (a .ne. 0)" so that a zero a never meets 1 - fm = 0 (0 * inf).
        step_c = np.where(a != 0, a * (nd1 / (tr * (1.0 - fm)))[:, None, None], 0.0)
    c = np.cumsum(step_c, axis=0)
    ng1 = ng - 1
    # Score (loop 74): observed minus expected cause-of-interest failures, first ng - 1 groups.
    expected = nd1[:, None] * rs * (1.0 - f1m) / (skmm_safe * tq[:, None])
    s = (fb[:, None] * np.where(active, d1 - expected, 0.0))[:, :ng1].sum(axis=0)

    # Cause-of-interest failures (loop 72), for groups still at risk.
    with np.errstate(divide="ignore", invalid="ignore"):
        t4 = np.where(skm > 0, 1.0 - (1.0 - f)[:, None] / skm, 1.0)
        t5 = np.where(nd1[:, None] > 1, 1.0 - (nd1[:, None] - 1.0) / (tr[:, None] * skmm - 1.0), 1.0)
        t3 = np.where(active & (nd1[:, None] > 0), t5 * skmm * nd1[:, None] / (tr[:, None] * rs_safe), 0.0)
    t1m = a[:, :ng1, :] - t4[:, None, :] * c[:, :ng1, :]  # (time, i, k)
    v3 = (t4 * t4 * t3).sum(axis=0)
    v2 = np.einsum("tik,tk->ik", t1m, t4 * t3)
    v = np.einsum("tik,tjk,tk->ij", t1m, t1m, t3)

    # Other-cause failures (loop 82), for groups with skm > 0 and such failures.
    with np.errstate(divide="ignore", invalid="ignore"):
        use = (skm > 0) & (d2 > 0)
        t4 = np.where(use, (1.0 - f)[:, None] / np.where(use, skm, 1.0), 0.0)
        t5 = np.where(d2 > 1, 1.0 - (d2 - 1.0) / (rs - 1.0), 1.0)
        t3 = np.where(use, t5 * skmm * skmm * d2 / (rs_safe * rs_safe), 0.0)
    t1m = t4[:, None, :] * c[:, :ng1, :]
    v3 = v3 + (t4 * t4 * t3).sum(axis=0)
    v2 = v2 - np.einsum("tik,tk->ik", t1m, t4 * t3)
    v = v + np.einsum("tik,tjk,tk->ij", t1m, t1m, t3)

    # Label 30: the terms in the final c, v2, v3.
    cf = c[-1, :ng1, :] if c.shape[0] else np.zeros((ng1, ng))
    v = v + (cf * v3) @ cf.T + cf @ v2.T + v2 @ cf.T
    return s, v


def _full_rank(v: FloatArray) -> bool:
    """Rank check in the spirit of R's qr() (LINPACK dqrdc2, tol = 1e-7), which cuminc uses before
    inverting: a pivoted column whose residual is below 1e-7 of its norm counts as dependent."""
    if not np.all(np.isfinite(v)):
        return False
    _, r, piv = qr(v, pivoting=True)
    col_norms = np.linalg.norm(v[:, piv], axis=0)
    diag = np.abs(np.diag(r))
    return bool(np.all(col_norms > 0) and np.all(diag > 1e-7 * col_norms))


def gray_test(
    time_days: ArrayLike,
    status: ArrayLike,
    group: ArrayLike,
    cause: int = 1,
    rho: float = 0.0,
) -> GroupTest:
    """Gray's K-sample test for equal cumulative incidence of ``cause`` (Gray 1988, Ann Stat 16:1141).

    Matches R's ``cuminc(time, status, group, rho = rho, cencode = 0)$Tests[cause, ]``: scores and
    covariance from cmprsk's ``crstm``; statistic ``s' V^-1 s``, chi-square with (groups - 1) df.
    Status 0 is censored, ``cause`` the event of interest, any other nonzero code a competing event.
    Statistic and p are None where cmprsk cannot test: a singular V (cuminc reports stat = -1, p = 1),
    fewer than two groups, or no event of interest at all (cuminc has no test row).
    """
    t = as_times(time_days)
    st = as_status(status, t.size)
    labels, codes = group_codes(group, t.size)
    ng = len(labels)
    df = ng - 1
    m = np.where(st == cause, 1, np.where(st != 0, 2, 0))
    if ng < 2 or not np.any(m == 1):
        return GroupTest("gray", labels, None, max(df, 0), None)
    s, v = _gray_score_var(t, m, codes, ng, float(rho))
    if not _full_rank(v):
        return GroupTest("gray", labels, None, df, None)
    stat = float(s @ np.linalg.solve(v, s))
    return GroupTest("gray", labels, stat, df, _chisq_p(stat, df))
