"""ELN 2020 molecular milestones on TKI therapy.

Source: Hochhaus A et al., European LeukemiaNet 2020 recommendations, Leukemia 2020;34:966-984, table of
milestones (clinical-rules.md section 2). Time counts from the start of first TKI therapy; months are days /
30.4375 (clinical-rules.md section 6).

| time           | optimal  | warning                    | failure                               |
| 3 months       | <= 10%   | > 10%                      | > 10% confirmed within 1-3 months     |
| 6 months       | <= 1%    | > 1-10%                    | > 10%                                 |
| 12 months      | <= 0.1%  | > 0.1-1%                   | > 1%                                  |
| any time after | <= 0.1%  | > 0.1-1% (loss of MMR)     | > 1%                                  |

Window rule (the guideline does not say which assay counts; this service applies one rule everywhere):
- 3, 6 and 12 months: the result closest to the milestone date within +-1 month (30.4375 days, compared
  exactly on whole days); on a tie the later result counts (it is the more recent information).
- "Any time after" 12 months: the latest result collected more than 12 months (365.25 days) after TKI start.
- The compared value is the result's `upper_is_percent`: the IS% if detectable, else its sensitivity. An
  undetectable result shows only IS% <= its sensitivity, so it decides the milestone when that proves
  "optimal"; otherwise the milestone is "not_assessable" (true IS% anywhere below the sensitivity, which
  cannot tell optimal from warning, and never shows a warning or a failure: those need a measured IS%
  above a bound). The reason says what the result does rule out; the remedy is to repeat the sample.
  The result used is still the closest (the latest): an older result is never preferred to it.
- 3-month failure needs a further detectable result > 10% taken 1-3 months (30.4375-91.3125 days) after
  the 3-month one; "any time after" failures are detectable results > 1%.
- "not_yet_due": no result yet and the window is still open on the assessment date; "no_result_in_window":
  the window has closed without a result. A window still open but holding a result is assessed with it,
  and `window_closed` False says a closer result may still arrive.

Samples taken off TKI (from the day after a stop up to a restart) are left out (status.py): ELN 2020
milestones judge therapy, and a loss of response in a treatment-free remission is the trigger to restart
the TKI (reported as loss of MMR), not a treatment failure.

Resistance mutations and high-risk additional chromosome abnormalities (also failure in ELN 2020) are not
derivable from BCR-ABL1 quantification and are not assessed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from shared.clinical.response import format_percent
from shared.clinical.scored import ScoredResult, measured_above
from shared.clinical.timeline import days_between, months_to_days

WINDOW_DAYS = months_to_days(1)  # +-1 month around 3/6/12 months
CONFIRM_MIN_DAYS = months_to_days(1)  # 3-month failure: confirmed 1-3 months later (ELN 2020)
CONFIRM_MAX_DAYS = months_to_days(3)
AFTER_12M_DAYS = months_to_days(12)

# (optimal if <= first bound, warning if <= second bound, else failure), ELN 2020 milestones table.
# 3 months has no upper warning bound: > 10% is a warning unless confirmed (handled separately).
MILESTONE_BOUNDS: dict[str, tuple[int, Fraction, Fraction | None]] = {
    "3m": (3, Fraction(10), None),
    "6m": (6, Fraction(1), Fraction(10)),
    "12m": (12, Fraction("0.1"), Fraction(1)),
}
AFTER_12M_BOUNDS: tuple[Fraction, Fraction] = (Fraction("0.1"), Fraction(1))
FAILURE_AFTER_12M = AFTER_12M_BOUNDS[1]

ASSESSED = ("optimal", "warning", "failure")
NOT_ASSESSABLE = "not_assessable"


def assess_milestones(
    tki_started_on: date, results: Sequence[ScoredResult], assessed_on: date
) -> list[dict[str, Any]]:
    """The four ELN 2020 milestones (3m, 6m, 12m, after_12m) in that order; `results` sorted by time."""
    milestones = [_fixed_milestone(name, tki_started_on, results, assessed_on) for name in MILESTONE_BOUNDS]
    milestones.append(_after_12m(tki_started_on, results, assessed_on))
    return milestones


def current_assessment(milestones: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """ELN 2020 reports the status at the current time point: the most recent milestone that has come due.
    One that cannot be assessed, or whose window closed without a result, is reported as such, never
    replaced by an older milestone ("optimal at 3 months" is not the status years later). "Any time after
    12 months" never closes: without a result it is not yet a time point, and the one before stands."""
    due = [
        m
        for m in milestones
        if m["assessment"] != "not_yet_due" and not (m["milestone"] == "after_12m" and m["result_id"] is None)
    ]
    return due[-1] if due else None


def failures_after_12m(tki_started_on: date, results: Sequence[ScoredResult]) -> list[ScoredResult]:
    """Results > 1% at any time after 12 months: each is an ELN 2020 failure at its time point."""
    # Whole days: days > AFTER_12M_DAYS exactly when days > its floor (no Fraction per result).
    after = tki_started_on + timedelta(days=math.floor(AFTER_12M_DAYS))
    return [r for r in results if r.collected_on > after and measured_above(r, FAILURE_AFTER_12M)]


def decides(result: ScoredResult, optimal_bound: Fraction) -> bool:
    """Whether a result decides a milestone whose optimal bound is `optimal_bound` (module docstring)."""
    c = result.classification
    return c.detectable or c.upper_is_percent_exact <= optimal_bound


def _due_on(tki_started_on: date, target_days: Fraction) -> date:
    # Milestone dates fall on fractional days (3 months = 91.3125); show the nearest whole day. Window
    # membership itself is decided on the exact fraction.
    return tki_started_on + timedelta(days=math.floor(target_days + Fraction(1, 2)))


def _closest_in_window(
    tki_started_on: date, results: Sequence[ScoredResult], target_days: Fraction
) -> ScoredResult | None:
    best: ScoredResult | None = None
    best_distance: Fraction | None = None
    # Whole days inside the window, so that only results in it pay for exact (Fraction) arithmetic.
    first, last = math.ceil(target_days - WINDOW_DAYS), math.floor(target_days + WINDOW_DAYS)
    lo, hi = tki_started_on + timedelta(days=first), tki_started_on + timedelta(days=last)
    for result in results:  # sorted by time, so "<=" makes the later of two equally close results win
        if not lo <= result.collected_on <= hi:
            continue
        days = days_between(tki_started_on, result.collected_on)
        distance = abs(days - target_days)
        if distance <= WINDOW_DAYS and (best_distance is None or distance <= best_distance):
            best, best_distance = result, distance
    return best


def _fixed_milestone(
    name: str, tki_started_on: date, results: Sequence[ScoredResult], assessed_on: date
) -> dict[str, Any]:
    months, optimal_bound, warning_bound = MILESTONE_BOUNDS[name]
    target = months_to_days(months)
    window_closed = days_between(tki_started_on, assessed_on) > target + WINDOW_DAYS
    base = {
        "milestone": name,
        "due_on": _due_on(tki_started_on, target).isoformat(),
        "window_from": (tki_started_on + timedelta(days=math.ceil(target - WINDOW_DAYS))).isoformat(),
        "window_to": (tki_started_on + timedelta(days=math.floor(target + WINDOW_DAYS))).isoformat(),
        "window_closed": window_closed,
    }
    chosen = _closest_in_window(tki_started_on, results, target)
    if chosen is None:
        return {**base, **_no_result(window_closed, f"{months} months")}
    value = chosen.classification.upper_is_percent_exact
    if not decides(chosen, optimal_bound):
        assessment, reason = (
            NOT_ASSESSABLE,
            _undecided(value, optimal_bound, warning_bound, f"at {months} months"),
        )
    elif value <= optimal_bound:
        assessment, reason = "optimal", f"<= {_pct(optimal_bound)}% at {months} months"
    elif warning_bound is not None and value <= warning_bound:
        assessment, reason = (
            "warning",
            f"> {_pct(optimal_bound)}-{_pct(warning_bound)}% at {months} months",
        )
    elif warning_bound is not None:
        assessment, reason = "failure", f"> {_pct(warning_bound)}% at {months} months"
    else:
        assessment, reason = _three_month_above(tki_started_on, results, chosen)
    return {**base, **_with_result(chosen, assessment, reason)}


def _three_month_above(
    tki_started_on: date, results: Sequence[ScoredResult], chosen: ScoredResult
) -> tuple[str, str]:
    # ELN 2020: > 10% at 3 months is a warning; a failure only if a result > 10% 1-3 months later confirms it.
    bound = MILESTONE_BOUNDS["3m"][1]
    for other in results:
        gap = days_between(chosen.collected_on, other.collected_on)
        if CONFIRM_MIN_DAYS <= gap <= CONFIRM_MAX_DAYS and measured_above(other, bound):
            return "failure", (
                f"> 10% at 3 months, confirmed by result {other.result_id} ({other.collected_on.isoformat()})"
                " > 10% taken 1-3 months later"
            )
    return "warning", "> 10% at 3 months, not confirmed by a result > 10% taken 1-3 months later"


def _after_12m(tki_started_on: date, results: Sequence[ScoredResult], assessed_on: date) -> dict[str, Any]:
    base = {
        "milestone": "after_12m",
        "due_on": _due_on(tki_started_on, AFTER_12M_DAYS).isoformat(),
        "window_from": (tki_started_on + timedelta(days=math.floor(AFTER_12M_DAYS) + 1)).isoformat(),
        "window_to": None,
        "window_closed": False,  # "any time after" never closes
    }
    optimal_bound, warning_bound = AFTER_12M_BOUNDS
    after = tki_started_on + timedelta(days=math.floor(AFTER_12M_DAYS))  # whole days, as above
    later = [r for r in results if r.collected_on > after]
    if not later:
        passed = days_between(tki_started_on, assessed_on) > AFTER_12M_DAYS
        return {**base, **_no_result(passed, "after 12 months")}
    latest = later[-1]
    value = latest.classification.upper_is_percent_exact
    if not decides(latest, optimal_bound):
        assessment, reason = (
            NOT_ASSESSABLE,
            _undecided(value, optimal_bound, warning_bound, "after 12 months"),
        )
    elif value <= optimal_bound:
        assessment, reason = "optimal", "<= 0.1% (in MMR) after 12 months"
    elif value <= warning_bound:
        assessment, reason = "warning", "> 0.1-1% after 12 months (not in MMR / loss of MMR)"
    else:
        assessment, reason = "failure", "> 1% after 12 months"
    return {**base, **_with_result(latest, assessment, reason)}


def _undecided(sensitivity: Fraction, optimal: Fraction, warning: Fraction | None, when: str) -> str:
    # What an undetectable result of poor sensitivity still rules out: a failure, if its bound is below
    # the failure threshold; never optimal versus warning.
    rules_out = (
        "" if warning is None or sensitivity > warning else f", so not > {_pct(warning)}% (no failure)"
    )
    return (
        f"IS <= {_pct(sensitivity)}%{rules_out}; cannot tell <= {_pct(optimal)}% from above it {when}: repeat"
        " the sample with more control-gene copies"
    )


def _no_result(window_passed: bool, when: str) -> dict[str, Any]:
    if window_passed:
        assessment, reason = "no_result_in_window", f"no result in the window for {when}"
    else:
        assessment, reason = "not_yet_due", f"window for {when} still open and no result yet"
    return {
        "assessment": assessment,
        "result_id": None,
        "collected_at": None,
        "is_percent": None,
        "reason": reason,
    }


def _with_result(result: ScoredResult, assessment: str, rule: str) -> dict[str, Any]:
    c = result.classification
    measured = (
        f"IS {_pct(c.upper_is_percent_exact)}%"
        if c.detectable
        else (f"undetectable, sensitivity IS {_pct(c.upper_is_percent_exact)}%")
    )
    return {
        "assessment": assessment,
        "result_id": result.result_id,
        "collected_at": result.collected_at,
        "is_percent": c.upper_is_percent,
        "reason": f"{assessment}: {measured} on {result.collected_on.isoformat()}; {rule} (ELN 2020)",
    }


def _pct(value: Fraction) -> str:
    return format_percent(value)
