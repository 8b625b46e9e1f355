"""What a clinician must not miss: the open actions of a patient, each with its source, and when the next
sample is due.

Sources: clinical-rules.md sections 9 and 10 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, TFR
section and milestones table; Cross 2015 on sample adequacy). The status is computed without a clock
(status.py), so "overdue" is not decided here: the status gives `next_sample_due`, and a reader with a
clock (the worklist, GET /v1/patients?overdue=true) compares it with today.

- resume_tki: off TKI after a stop, a result since the stop measured > 0.1% (ELN 2020 TFR section).
- repeat_sample: the latest result cannot assess MR4 or deeper, `sensitivity_limited` (Cross 2015).
- confirm_3_month_result: > 10% at 3 months and no result yet 1 month or more after it (ELN 2020 table).
- mutation_analysis: the ELN assessment is failure (recommended) or warning (consider), and no mutation
  analysis from 3 months before its onset on (ELN 2020, clinical-rules.md s.9).
- review_same_day_results: the latest day's results disagree on the level (this service's rule).

Monitoring frequency (ELN 2020, clinical-rules.md s.10), from the latest sample:
- on TKI: every 3 months until MMR; in MMR every 3 to 6 months, so the next sample is due by 6 months;
- after stopping a TKI (treatment-free remission): monthly during the first 6 months, every 2 months from
  month 7 to 12, then every 3 months (the month is that of the latest sample since the stop).
No sample is due after a death, nor while lost to follow-up with nothing documented since.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from shared.clinical.milestones import CONFIRM_MIN_DAYS, MILESTONE_BOUNDS, WINDOW_DAYS
from shared.clinical.response import MMR_THRESHOLD, at_least
from shared.clinical.scored import ScoredResult, measured_above
from shared.clinical.therapy import Event, TkiCourse
from shared.clinical.timeline import days_between, months_to_days

RESUME_WITHIN_DAYS = 28  # ELN 2020 TFR section: restart the TKI within 4 weeks of a loss of MMR
MUTATION_ANALYSIS_LOOKBACK = months_to_days(3)
# (months since the stop up to which, interval in months): ELN 2020 TFR section.
TFR_SCHEDULE: tuple[tuple[int | None, int], ...] = ((6, 1), (12, 2), (None, 3))
ON_TKI_INTERVAL_MONTHS, IN_MMR_INTERVAL_MONTHS = 3, 6

SOURCES = {
    "resume_tki": "ELN 2020 TFR section: restart the TKI within 4 weeks of a loss of MMR;"
    " clinical-rules.md s.10",
    "repeat_sample": "Cross 2015 (sample adequacy): a result too insensitive to decide a deep level or a"
    " milestone calls for a repeat sample; clinical-rules.md s.1, s.10",
    "confirm_3_month_result": "ELN 2020 milestones table: > 10% at 3 months is a failure only if confirmed"
    " within 1-3 months; clinical-rules.md s.2, s.10",
    "mutation_analysis": "ELN 2020: mutation analysis on failure and progression, considered on warning;"
    " clinical-rules.md s.9",
    "review_same_day_results": "Two results of one day disagree on the level: the service uses the later"
    " in collection order (time of collection, then result_id); README 'Same-day results'",
    "monitoring": "ELN 2020 monitoring frequency (on TKI, and after stopping one); clinical-rules.md s.10",
}


def _action(code: str, reason: str, since: date, due_by: date | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "reason": reason,
        "since": since.isoformat(),
        "due_by": None if due_by is None else due_by.isoformat(),
        "source": SOURCES[code],
        **extra,
    }


def _plus_months(day: date, months: int) -> date:
    return day + timedelta(days=math.floor(months_to_days(months)))


def followed(scored: Sequence[ScoredResult], events: Sequence[Event]) -> bool:
    """Whether the patient is still followed: no death, and not lost to follow-up with nothing since."""
    if any(e.type == "death" for e in events):
        return False
    lost = [e.on for e in events if e.type == "lost_to_follow_up"]
    if not lost:
        return True
    since = [r.collected_on for r in scored] + [e.on for e in events if e.type != "lost_to_follow_up"]
    return any(d > max(lost) for d in since)


def monitoring(
    scored: Sequence[ScoredResult],
    events: Sequence[Event],
    course: TkiCourse,
    level: str | None,
    tki_started_on: date | None,
) -> dict[str, Any]:
    """The next sample's due date and the schedule behind it."""
    base = {"next_sample_due": None, "schedule": None, "interval_months": None, "basis": None,
            "source": SOURCES["monitoring"]}  # fmt: skip
    if not followed(scored, events):
        return {**base, "basis": "not followed (death, or lost to follow-up)"}
    latest = scored[-1].collected_on if scored else None
    stopped = course.last_stopped_on
    if not course.on_tki and stopped is not None:
        since_stop = [r.collected_on for r in scored if r.collected_on > stopped]
        anchor = max(since_stop) if since_stop else stopped
        months = Fraction(days_between(stopped, anchor)) / months_to_days(1)
        interval = next(n for upto, n in TFR_SCHEDULE if upto is None or months < upto)
        schedule = "after_tki_stop"
        latest_since = "latest sample since the stop" if since_stop else "no sample since the stop"
        basis = f"off TKI since {stopped.isoformat()}; {latest_since}"
    else:
        # A sample taken before the TKI start (at diagnosis) is not the last on-TKI sample.
        anchor = max((d for d in (latest, tki_started_on) if d is not None), default=None)
        if anchor is None:
            return {**base, "basis": "no result and no TKI start recorded"}
        in_mmr = level is not None and at_least(level, "MMR")
        interval = IN_MMR_INTERVAL_MONTHS if in_mmr else ON_TKI_INTERVAL_MONTHS
        schedule = "on_tki_in_mmr" if in_mmr else "on_tki_until_mmr"
        basis = "latest result" if latest else "start of TKI therapy (no result yet)"
    due = _plus_months(anchor, interval)
    return {**base, "next_sample_due": due.isoformat(), "schedule": schedule, "interval_months": interval,
            "basis": f"{basis} ({anchor.isoformat()}) + {interval} month(s)"}  # fmt: skip


def tfr_relapse(scored: Sequence[ScoredResult], course: TkiCourse) -> ScoredResult | None:
    """The first result since the latest stop measured > 0.1%, while still off TKI: a loss of MMR after
    TFR (ELN 2020: resume the TKI; the milestones table note: a failure after TFR). None on TKI."""
    stopped = course.last_stopped_on
    if course.on_tki or stopped is None:
        return None
    return next((r for r in scored if r.collected_on > stopped and measured_above(r, MMR_THRESHOLD)), None)


def _resume_tki(scored: Sequence[ScoredResult], course: TkiCourse) -> list[dict[str, Any]]:
    r = tfr_relapse(scored, course)
    if r is None or course.last_stopped_on is None:
        return []
    reason = (
        f"loss of MMR off TKI: result {r.result_id} on {r.collected_on.isoformat()} measured > 0.1%"
        f" after the stop of {course.last_stopped_on.isoformat()}"
    )
    due = r.collected_on + timedelta(days=RESUME_WITHIN_DAYS)
    return [_action("resume_tki", reason, r.collected_on, due, result_id=r.result_id)]


def _repeat_sample(scored: Sequence[ScoredResult]) -> list[dict[str, Any]]:
    if not scored or not scored[-1].classification.sensitivity_limited:
        return []
    latest = scored[-1]
    reason = (
        f"result {latest.result_id}: {latest.classification.reason}; repeat with more control-gene copies"
    )
    return [_action("repeat_sample", reason, latest.collected_on, result_id=latest.result_id)]


def _confirm_3_months(
    milestones: Sequence[Mapping[str, Any]], on_tki: Sequence[ScoredResult]
) -> list[dict[str, Any]]:
    three = next((m for m in milestones if m["milestone"] == "3m"), None)
    if three is None or three["result_id"] is None:
        return []
    chosen = next(r for r in on_tki if r.result_id == three["result_id"])
    if not measured_above(chosen, MILESTONE_BOUNDS["3m"][1]):
        return []
    if any(days_between(chosen.collected_on, r.collected_on) >= CONFIRM_MIN_DAYS for r in on_tki):
        return []  # the result that confirms or refutes it is in (milestones.py decides which)
    due = _plus_months(chosen.collected_on, 3)
    reason = (
        f"> 10% at 3 months (result {chosen.result_id}, {chosen.collected_on.isoformat()}): a failure only"
        " if confirmed; a sample is due 1 to 3 months after it"
    )
    # The earliest sample that can confirm is a whole month (30.4375 days) later: day 31, not 30.
    due_from = chosen.collected_on + timedelta(days=math.ceil(CONFIRM_MIN_DAYS))
    return [_action("confirm_3_month_result", reason, chosen.collected_on, due, result_id=chosen.result_id,
                    due_from=due_from.isoformat())]  # fmt: skip


def _onset(basis: Mapping[str, Any], on_tki: Sequence[ScoredResult], started: date | None) -> date:
    """When the current warning or failure began: for a milestone, the first result of the unbroken run
    of on-TKI results, up to the one behind it, each above the optimal bound of the time point it was
    taken after (a warning present since month 12 began at month 12, however many results have shown
    it since); for an event, its date."""
    onset = date.fromisoformat(basis["date"])
    ids = [r.result_id for r in on_tki]
    if basis.get("kind") != "milestone" or started is None or basis.get("result_id") not in ids:
        return onset
    for r in reversed(on_tki[: ids.index(basis["result_id"]) + 1]):
        if not measured_above(r, _optimal_bound_at(days_between(started, r.collected_on))):
            break
        onset = r.collected_on
    return onset


def _optimal_bound_at(days: int) -> Fraction:
    # The optimal bound of the latest milestone whose window has opened (ELN 2020 table; the window is
    # milestones.WINDOW_DAYS either side): 10% to 5 months, 1% to 11 months, then MMR (0.1%).
    bound = MILESTONE_BOUNDS["3m"][1]
    for months, optimal, _ in MILESTONE_BOUNDS.values():
        if days >= months_to_days(months) - WINDOW_DAYS:
            bound = optimal
    return bound


def _mutation_analysis(
    assessment: str | None,
    basis: Mapping[str, Any] | None,
    events: Sequence[Event],
    on_tki: Sequence[ScoredResult],
    started: date | None,
) -> list[dict[str, Any]]:
    if assessment not in ("failure", "warning") or basis is None or basis.get("date") is None:
        return []
    if basis.get("type") == "resistance_mutation":
        return []  # the analysis was done: it found the mutation
    if basis.get("kind") == "tfr_loss_of_mmr":
        return []  # a relapse off the drug is answered by resuming it (resume_tki), not by resistance testing
    onset = _onset(basis, on_tki, started)
    done = [
        e for e in events
        if e.type in ("resistance_mutation", "mutation_analysis")
        and days_between(e.on, onset) <= MUTATION_ANALYSIS_LOOKBACK
    ]  # fmt: skip
    if done:
        return []
    priority = "recommended" if assessment == "failure" else "consider"
    reason = (
        f"ELN assessment {assessment} since {onset.isoformat()} ({basis['reason']}):"
        f" mutation analysis {priority}"
    )
    return [_action("mutation_analysis", reason, onset, priority=priority)]


SAME_DAY_RULE = (
    "the later in collection order (time of collection, then result_id) sets the level, unless it is"
    " sensitivity-limited and shows no deeper level than the one before (then the earlier stands)"
)


def same_day_discordance(
    scored: Sequence[ScoredResult], setting: Sequence[ScoredResult]
) -> list[dict[str, Any]]:
    """Days whose results disagree on the level, with the result the service uses for the level that
    day: the last of that day's results that sets the level (`setting`, scored.level_setting's
    answer for `scored`), by SAME_DAY_RULE."""
    setting_ids = {r.result_id for r in setting}
    days = [r.collected_on for r in scored]
    by_day: dict[date, list[ScoredResult]] = {}
    if all(a <= b for a, b in zip(days, days[1:], strict=False)):
        # In collection order (as the status passes it): a day's results are adjacent, and only days
        # with two results or more can disagree.
        for i in range(1, len(days)):
            if days[i] == days[i - 1]:
                by_day.setdefault(days[i], [scored[i - 1]]).append(scored[i])
    else:
        for r in scored:
            by_day.setdefault(r.collected_on, []).append(r)
    out = []
    for day, rs in by_day.items():
        if len(rs) < 2 or len({r.classification.level for r in rs}) < 2:
            continue
        used = [r.result_id for r in rs if r.result_id in setting_ids]
        out.append({
            "date": day.isoformat(),
            "result_ids": [r.result_id for r in rs],
            "levels": [r.classification.level for r in rs],
            "used": used[-1] if used else None,
            "rule": SAME_DAY_RULE,
        })  # fmt: skip
    return out


def open_actions(
    scored: Sequence[ScoredResult],
    on_tki: Sequence[ScoredResult],
    events: Sequence[Event],
    course: TkiCourse,
    milestones: Sequence[Mapping[str, Any]],
    assessment: str | None,
    basis: Mapping[str, Any] | None,
    tki_started_on: date | None,
    discordant: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Every open action, in the order of the module docstring's list; `discordant` is
    same_day_discordance's answer for `scored`."""
    if not followed(scored, events):
        return []
    actions = [
        *_resume_tki(scored, course),
        *_repeat_sample(scored),
        *_confirm_3_months(milestones, on_tki),
        *_mutation_analysis(assessment, basis, events, on_tki, tki_started_on),
    ]
    if discordant and scored and discordant[-1]["date"] == scored[-1].collected_on.isoformat():
        last = discordant[-1]
        reason = (
            f"results {', '.join(last['result_ids'])} of {last['date']} disagree on the level"
            f" ({', '.join(last['levels'])}); the service uses {last['used']}"
        )
        actions.append(_action("review_same_day_results", reason, scored[-1].collected_on,
                               result_ids=last["result_ids"]))  # fmt: skip
    return actions


ACTION_CODES = tuple(k for k in SOURCES if k != "monitoring")
