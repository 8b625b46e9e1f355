"""Cohorts: who is followed from when, what counts as the endpoint, and the cohort's statistics.

Definitions (README.md, "Cohort statistics"):

- Time origin: the patient's ``enrolled_on``. Times are days; months = days / 30.4375.
- Event time: the collection date of the first result on or after enrolment scoring the cohort's
  endpoint level or deeper (default MR4.5, the ACTIM endpoint; clinical-rules.md section 5).
- A competing event (default tki_stopped, progression, death) counts when it comes before the
  endpoint (on the same day, the assay's endpoint wins: it was observed).
- Otherwise the patient is censored at the last assay on or after enrolment, or at a censoring event
  (default lost_to_follow_up), or at the data cut-off, whichever is first. A censoring event before
  the endpoint or a competing event ends follow-up there.
- A patient with no enrolment date or no result since enrolment (as of the cut-off, if any) is not
  evaluable: counted and listed, never silently dropped.

Each patient's data is reduced by the patient's recompute task to a small follow-up record (the
dates that matter), stored in every cohort the patient belongs to, so that a cohort refresh reads one
hash instead of every patient's history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from shared import stats
from shared.clinical.response import LEVELS, at_least
from shared.clinical.scored import ScoredResult, level_setting, score_results
from shared.clinical.timeline import DAYS_PER_MONTH

ENDPOINT_LEVELS = ("MMR", "MR4", "MR4.5", "MR5")
DEFAULT_HORIZONS_MONTHS = (3, 6, 12, 24, 48)
DEFAULT_DEFINITION: dict[str, Any] = {
    "endpoint": "MR4.5",
    "competing_events": ["death", "progression", "tki_stopped"],
    "censoring_events": ["lost_to_follow_up"],
    "data_cutoff": None,
    "description": None,
}
# Status codes as in R's cmprsk and the reference CSVs: 0 censored, 1 endpoint, 2 competing event.
CENSORED, ENDPOINT, COMPETING = 0, 1, 2


def definition(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_DEFINITION, **(stored or {})}


# --- per patient ----------------------------------------------------------------------------------


def follow_up_record(registration: Mapping, results: Iterable[Mapping], events: Iterable[Mapping]) -> dict:
    """The dates a cohort needs from one patient (JSON-ready; ISO dates)."""
    scored, _ = score_results(results)
    return follow_up_record_of_scored(registration, scored, events)


def follow_up_record_of_scored(
    registration: Mapping, scored: Sequence[ScoredResult], events: Iterable[Mapping]
) -> dict:
    """follow_up_record of results already scored (included ones, in collection order)."""
    enrolled = registration.get("enrolled_on")
    since = [s for s in scored if enrolled is not None and s.collected_on.isoformat() >= enrolled]
    reached = {}
    for level in ENDPOINT_LEVELS:
        first = next((s for s in since if at_least(s.classification.level, level)), None)
        reached[level] = first.collected_on.isoformat() if first else None
    setting = level_setting(scored)
    current = setting[-1] if setting else None  # the status's response_level
    return {
        "enrolled_on": enrolled,
        "level": current.classification.level if current else None,
        "reached": reached,
        "first_assay": since[0].collected_on.isoformat() if since else None,
        "last_assay": since[-1].collected_on.isoformat() if since else None,
        "events": sorted(
            [e["type"], e["date"]] for e in events if enrolled is not None and e["date"] >= enrolled
        ),
    }


def _days(start: str, end: str) -> float:
    return float(date.fromisoformat(end).toordinal() - date.fromisoformat(start).toordinal())


def _first_events(events: Iterable, defn: Mapping, cutoff: str | None) -> tuple[str | None, str | None]:
    """(first competing event date, first censoring event date), ignoring events after the cut-off."""
    competing = censoring = None
    for kind, day in events:
        if cutoff is not None and day > cutoff:
            continue
        if kind in defn["competing_events"]:
            competing = day if competing is None or day < competing else competing
        elif kind in defn["censoring_events"]:
            censoring = day if censoring is None or day < censoring else censoring
    return competing, censoring


def outcome(record: Mapping, defn: Mapping) -> tuple[float, int] | None:
    """(time in days, status) of one patient under a cohort definition; None if not evaluable."""
    enrolled, last = record["enrolled_on"], record["last_assay"]
    if enrolled is None or last is None:
        return None
    cutoff = defn.get("data_cutoff")
    # Records made before first_assay was kept lack it: they skip that check until the recompute that
    # the rules change brings at the next worker start.
    first = record.get("first_assay") or enrolled
    if cutoff is not None and (enrolled > cutoff or first > cutoff):
        return None  # no result since enrolment as of the cut-off: not evaluable, like no result at all
    competing, censoring = _first_events(record["events"], defn, cutoff) if record["events"] else (None, None)
    reached = record["reached"].get(defn["endpoint"])
    if reached is not None and cutoff is not None and reached > cutoff:
        reached = None
    # The endpoint counts unless a competing or censoring event came strictly before it.
    if (
        reached is not None
        and (competing is None or reached <= competing)
        and (censoring is None or reached <= censoring)
    ):
        return _days(enrolled, reached), ENDPOINT
    if competing is not None and (censoring is None or competing <= censoring):
        return _days(enrolled, competing), COMPETING
    end = min(d for d in (last, censoring, cutoff) if d is not None)
    return _days(enrolled, end), CENSORED


# --- per cohort -----------------------------------------------------------------------------------


@dataclass
class CohortData:
    """The cohort as the estimators see it: evaluable patients with their time and status."""

    patients: list[str]
    time_days: np.ndarray
    status: np.ndarray
    not_evaluable: list[str]
    levels: dict[str, int]


def cohort_data(records: Mapping[str, Mapping], defn: Mapping) -> CohortData:
    patients, times, statuses, not_evaluable = [], [], [], []
    levels = {level: 0 for level in reversed(LEVELS)} | {"no_result": 0}
    for pid in sorted(records):
        record = records[pid]
        levels[record["level"] or "no_result"] += 1
        result = outcome(record, defn)
        if result is None:
            not_evaluable.append(pid)
            continue
        patients.append(pid)
        times.append(result[0])
        statuses.append(result[1])
    return CohortData(
        patients, np.asarray(times, dtype=float), np.asarray(statuses, dtype=np.int64), not_evaluable, levels
    )


def horizon_table(data: CohortData, horizons_months: Sequence[float]) -> dict:
    """Both estimators of the endpoint's cumulative incidence at each horizon."""
    horizons = np.asarray(horizons_months, dtype=float) * DAYS_PER_MONTH
    km = stats.one_minus_km(data.time_days, data.status == ENDPOINT, horizons).as_dict()
    aj = stats.cumulative_incidence(data.time_days, data.status, horizons).at_horizons.as_dict()
    return {
        "horizons_months": [float(h) for h in horizons_months],
        "one_minus_km": {k: km[k] for k in ("estimate", "variance", "lower", "upper", "n_at_risk")},
        "aalen_johansen": {k: aj[k] for k in ("estimate", "variance", "lower", "upper", "n_at_risk")},
    }


def _median(data: CohortData) -> dict:
    m = stats.median_time(data.time_days, data.status == ENDPOINT).as_dict()
    months = {f"{k}_months": (None if v is None else v / DAYS_PER_MONTH) for k, v in m.items()}
    return {**{f"{k}_days": v for k, v in m.items()}, **months}


def statistics(data: CohortData, horizons_months: Sequence[float] = DEFAULT_HORIZONS_MONTHS) -> dict:
    """The statistics document of one cohort (without the envelope the worker adds)."""
    counts = np.bincount(data.status, minlength=3) if data.status.size else np.zeros(3, dtype=int)
    return {
        "n": len(data.patients) + len(data.not_evaluable),
        "n_evaluable": len(data.patients),
        "not_evaluable": {"count": len(data.not_evaluable), "patients": data.not_evaluable[:1000]},
        "counts_by_level": data.levels,
        "outcomes": {"endpoint": int(counts[1]), "competing": int(counts[2]), "censored": int(counts[0])},
        "last_follow_up_days": float(data.time_days.max()) if data.time_days.size else None,
        **horizon_table(data, horizons_months),
        "median_time_to_endpoint": _median(data),
    }


def curve(data: CohortData) -> dict:
    """Step curves of both estimators for plots: one point per unique endpoint time."""
    aj = stats.cumulative_incidence(data.time_days, data.status, []).curve.as_dict()
    times = aj["time_days"]
    km = stats.one_minus_km(data.time_days, data.status == ENDPOINT, times).as_dict() if times else None
    keys = ("estimate", "lower", "upper", "n_at_risk")
    return {
        "time_days": times,
        "time_months": [t / DAYS_PER_MONTH for t in times],
        "last_time_days": aj["last_time_days"],
        "one_minus_km": {k: km[k] for k in keys} if km else {k: [] for k in keys},
        "aalen_johansen": {k: aj[k] for k in keys},
        "at_risk": at_risk_table(data),
    }


def at_risk_step_months(last_months: float) -> int:
    """Ticks of the numbers-at-risk row: every 3 months over two years, coarser beyond (readable)."""
    return 3 if last_months <= 24 else 6 if last_months <= 60 else 12


def at_risk_table(data: CohortData) -> dict:
    """Numbers at risk (follow-up time >= t) at regular ticks from 0 to the last follow-up: the row
    printed under a published curve's axis. The curve's own ``n_at_risk`` is at endpoint times only,
    from which the count at a tick between them (censorings) cannot be recovered."""
    if not data.time_days.size:
        return {"months": [], "n_at_risk": []}
    months = at_risk_months(float(data.time_days.max()) / DAYS_PER_MONTH)
    return {"months": months, "n_at_risk": at_risk_on(data, months)}


def at_risk_months(last_months: float) -> list[float]:
    """The ticks from 0 to ``last_months`` (follow-up), at the step ``at_risk_step_months`` gives."""
    return [float(m) for m in range(0, int(last_months) + 1, at_risk_step_months(last_months))]


def at_risk_on(data: CohortData, months: Sequence[float]) -> list[int]:
    """Numbers at risk (follow-up time >= t) at the given months: 0 beyond the cohort's last follow-up."""
    return [int((data.time_days >= m * DAYS_PER_MONTH).sum()) for m in months]


def compared_at_risk(a: CohortData, b: CohortData) -> dict:
    """Both cohorts' numbers at risk on one grid, so the two rows under a compared plot line up: the
    coarser of the two steps (the longer follow-up's), from 0 to the longer follow-up; a cohort followed
    less long has 0 at risk beyond its last time."""
    lasts = [float(d.time_days.max()) / DAYS_PER_MONTH for d in (a, b) if d.time_days.size]
    months = at_risk_months(max(lasts)) if lasts else []
    return {"months": months, "a": at_risk_on(a, months), "b": at_risk_on(b, months)}


def compare(
    a: CohortData, b: CohortData, horizons_months: Sequence[float], endpoints: tuple[str, str]
) -> dict:
    """Log-rank and Gray's test between two cohorts (patients in both count in both groups), with
    warnings where the tests' premises fail: the same endpoint, independent groups."""
    time = np.concatenate([a.time_days, b.time_days])
    status = np.concatenate([a.status, b.status])
    group = np.array(["a"] * len(a.patients) + ["b"] * len(b.patients))
    overlap = len(set(a.patients) & set(b.patients))
    warnings = []
    if endpoints[0] != endpoints[1]:
        warnings.append(
            f"the cohorts define different endpoints ({endpoints[0]}, {endpoints[1]}): the tests compare"
            " different events"
        )
    if overlap:
        warnings.append(
            f"{overlap} patients are in both cohorts and count in both groups: the tests assume independent"
            " groups"
        )
    return {
        "overlap": overlap,
        "warnings": warnings,
        "logrank": stats.logrank(time, status == ENDPOINT, group).as_dict(),
        "gray": stats.gray_test(time, status, group).as_dict(),
        "a": horizon_table(a, horizons_months),
        "b": horizon_table(b, horizons_months),
        "at_risk": compared_at_risk(a, b),
    }
