"""A patient's molecular-response status document, recomputed from the whole stored history.

Pure and deterministic: the same registration, results and events (in any order) give the same document.
There is no "now": the assessment date `assessed_on` is the later of the latest included result's collection
date and the latest event date; with neither, the later of tki_started_on and enrolled_on (None if both are
missing). Every duration and "not yet due" is judged at that date.

Rules and sources: clinical-rules.md (Cross 2015 scoring, ELN 2020 milestones/TFR, ELN 2013 loss of MMR,
ACTIM entry). Results with status "entered-in-error" are excluded from every computation and only counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from shared.clinical.actions import monitoring, open_actions, same_day_discordance, tfr_relapse
from shared.clinical.eligibility import actim_eligibility, tfr_eligibility
from shared.clinical.failures import eln_failures, eln_warnings
from shared.clinical.lines import therapy_history
from shared.clinical.milestones import assess_milestones, current_assessment
from shared.clinical.response import LEVELS, MMR_THRESHOLD, at_least, level_rank
from shared.clinical.scored import ScoredResult, level_setting, measured_above, score_results
from shared.clinical.therapy import Event, documented_on, parse_events, taken_on_tki, tki_course
from shared.clinical.timeline import iso, months_between, parse_date

FIRST_REACHED_LEVELS = ("MMR", "MR4", "MR4.5", "MR5")
# ELN 2013 (Baccarani, Blood 2013): a loss of MMR is confirmed by two consecutive results > 0.1%, one >= 1%.
CONFIRMED_LOSS_ONE_AT_LEAST = 1


def patient_status(
    registration: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """JSON-ready status document for one patient (see the module docstring for `assessed_on`).

    `eln_assessment` is the assessment of the most recent milestone that has come due: ELN 2020 reports the
    status at the current time point, not the worst one ever seen (earlier failures remain visible in
    `milestones` and in the TFR criterion "no_prior_failure").
    """
    scored, withdrawn = score_results(results)
    return status_of_scored(registration, scored, withdrawn, events)


def status_of_scored(
    registration: Mapping[str, Any],
    scored: Sequence[ScoredResult],
    withdrawn: int,
    events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """patient_status of results already scored (``score_results``' answer: the included results in
    collection order and the count of withdrawn ones), as a recompute folds stored scores."""
    timeline = parse_events(events)
    enrolled_on = _optional_date(registration.get("enrolled_on"))
    tki_started_on = _optional_date(registration.get("tki_started_on"))
    assessed_on = _assessed_on(scored, timeline, enrolled_on, tki_started_on)
    # With no result and no therapy event nothing documents therapy past its start: never a death's or
    # a loss to follow-up's date (clinical-rules.md s.8).
    documented = _latest(documented_on((r.collected_on for r in scored), timeline), tki_started_on)
    course = tki_course(registration, timeline)
    history = therapy_history(registration, timeline)
    on_tki = taken_on_tki(scored, timeline)
    milestones, milestones_reason = _milestones(tki_started_on, on_tki, assessed_on)
    current = current_assessment(milestones)
    failures = eln_failures(timeline, history, tki_started_on)
    assessment, basis = overall_assessment(current, failures, tfr_relapse(scored, course))
    latest = scored[-1] if scored else None
    setting = level_setting(scored)
    at_level = setting[-1] if setting else None  # the result the current level comes from
    level = None if at_level is None else at_level.classification.level
    discordant = same_day_discordance(scored, setting)
    schedule = monitoring(scored, timeline, course, level, tki_started_on)
    return {
        "patient_id": registration["patient_id"],
        "assessed_on": iso(assessed_on),
        "results_count": len(scored),
        "results_withdrawn": withdrawn,
        "response_level": level,
        "is_percent": None if at_level is None else at_level.classification.is_percent,
        "response_level_on": None if at_level is None else at_level.collected_on.isoformat(),
        # The result `response_level`, `is_percent` and `response_level_on` come from.
        "is_percent_result_id": None if at_level is None else at_level.result_id,
        "latest_result": None if latest is None else _result_view(latest),
        **_best(scored),
        "first_reached": {level: _first_reached(scored, level) for level in FIRST_REACHED_LEVELS},
        "months_from_enrollment": _months(enrolled_on, assessed_on),
        "months_from_tki_start": _months(tki_started_on, assessed_on),
        "loss_of_mmr": loss_of_mmr(scored),
        "milestones": milestones,
        "milestones_reason": milestones_reason,
        "eln_assessment": assessment,
        "eln_assessment_milestone": None if current is None else current["milestone"],
        "eln_assessment_basis": basis,
        "eln_failures": failures,
        "eln_warnings": eln_warnings(timeline, tki_started_on),
        "actim_eligible": actim_eligibility(course, history, latest, documented),
        "tfr_eligibility": tfr_eligibility(
            registration, course, history, timeline, scored, milestones, documented, failures
        ),
        "events": [event.to_dict() for event in timeline],
        "on_tki": course.on_tki,
        "therapy": history.to_dict(),
        "unknown_tki": history.unknown_tki,
        "documented_on": iso(documented),
        "actions": open_actions(
            scored, on_tki, timeline, course, milestones, assessment, basis, tki_started_on, discordant
        ),
        "next_sample_due": schedule["next_sample_due"],
        "monitoring": schedule,
        "same_day_discordant": discordant,
    }


def overall_assessment(
    current: Mapping[str, Any] | None,
    failures: Sequence[Mapping[str, Any]],
    relapse: ScoredResult | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """ELN 2020 assessment now: "failure" while a failure event holds (failures.py) or while MMR is lost
    off TKI after a stop (ELN 2020 milestones table note: "loss of MMR indicates failure after TFR"),
    else the current milestone's. The basis says which, with its date and reason."""
    if relapse is not None:
        when = relapse.collected_on.isoformat()
        return "failure", {
            "kind": "tfr_loss_of_mmr",
            "result_id": relapse.result_id,
            "date": when,
            "reason": (
                f"failure: loss of MMR after stopping the TKI (result {relapse.result_id} on {when} > 0.1%;"
                " ELN 2020 milestones table note: loss of MMR indicates failure after TFR)"
            ),
        }
    holding = [f for f in failures if f["current"]]
    if holding:
        latest = holding[-1]
        return "failure", {
            "kind": "event",
            "type": latest["type"],
            "event_id": latest["event_id"],
            "date": latest["date"],
            "reason": latest["reason"],
        }
    if current is None:
        return None, None
    collected = current.get("collected_at")
    return current["assessment"], {
        "kind": "milestone",
        "milestone": current["milestone"],
        "result_id": current.get("result_id"),
        "date": None if collected is None else parse_date(collected).isoformat(),
        "reason": current["reason"],
    }


def _latest(*days: date | None) -> date | None:
    # A sample before the TKI start (at diagnosis) documents no therapy: durations never go negative.
    known = [d for d in days if d is not None]
    return max(known) if known else None


def _optional_date(value: str | None) -> date | None:
    return None if value is None else parse_date(value)


def _assessed_on(
    scored: Sequence[ScoredResult], timeline: Sequence[Event], enrolled_on: date | None, started: date | None
) -> date | None:
    observed = [r.collected_on for r in scored] + [e.on for e in timeline]
    if observed:
        return max(observed)
    fallback = [d for d in (enrolled_on, started) if d is not None]
    return max(fallback) if fallback else None


def _months(start: date | None, end: date | None) -> float | None:
    return None if start is None or end is None else months_between(start, end)


def _result_view(result: ScoredResult) -> dict[str, Any]:
    return {
        "result_id": result.result_id,
        "collected_at": result.collected_at,
        "collected_on": result.collected_on.isoformat(),
        **result.classification.to_dict(),
    }


def _best(scored: Sequence[ScoredResult]) -> dict[str, Any]:
    if not scored:
        return {"best_level": None, "best_level_on": None}
    best = max((r.classification.level for r in scored), key=level_rank)
    return {"best_level": best, "best_level_on": _first_reached(scored, best)}


def _first_reached(scored: Sequence[ScoredResult], level: str) -> str | None:
    for result in scored:
        if at_least(result.classification.level, level):
            return result.collected_on.isoformat()
    return None


def _milestones(
    tki_started_on: date | None, scored: Sequence[ScoredResult], assessed_on: date | None
) -> tuple[list[dict[str, Any]], str | None]:
    if tki_started_on is None or assessed_on is None:
        return [], "tki_started_on not recorded: ELN 2020 milestones count from the start of TKI therapy"
    return assess_milestones(tki_started_on, scored, assessed_on), None


def _is_loss(result: ScoredResult) -> bool:
    # Only a detectable result > 0.1% shows a loss: an undetectable result of poor sensitivity does not.
    return measured_above(result, MMR_THRESHOLD)


def _tells_mmr(result: ScoredResult) -> bool:
    # In MMR or not: a measurement tells, and so does an undetectable result whose sensitivity is within
    # 0.1%; one of poorer sensitivity cannot tell, and neither ends a loss nor parts two consecutive ones.
    c = result.classification
    return c.detectable or c.upper_is_percent_exact <= MMR_THRESHOLD


def loss_of_mmr(scored: Sequence[ScoredResult]) -> dict[str, Any]:
    """Loss of MMR after MMR was first reached (clinical-rules.md s.3), over the results that can tell
    whether the patient is in MMR.

    Single loss: any later result > 0.1% (ELN 2020: warning on TKI; trigger to resume TKI in TFR).
    `ever_lost` (also `lost`, kept for readers of the first version) says whether MMR was ever lost,
    `current` whether the latest result telling MMR is a loss, `regained_on` when MMR was regained
    after the latest loss (None while the loss is current or if MMR was never lost).
    Confirmed loss: two consecutive results > 0.1%, one of them >= 1% (ELN 2013, Baccarani Blood 2013).
    """
    first_mmr = next((i for i, r in enumerate(scored) if at_least(r.classification.level, "MMR")), None)
    after = [] if first_mmr is None else [r for r in scored[first_mmr + 1 :] if _tells_mmr(r)]
    loss = [_is_loss(r) for r in after]  # each result judged once
    losses = [r for r, lost in zip(after, loss, strict=True) if lost]
    confirmed_on = None
    for i in range(len(after) - 1):
        pair = (after[i], after[i + 1])
        if (loss[i] and loss[i + 1]) and any(
            r.classification.is_percent_exact >= CONFIRMED_LOSS_ONE_AT_LEAST for r in pair
        ):
            confirmed_on = pair[1].collected_on
            break
    current = bool(after) and loss[-1]
    regained_on = None
    if losses and not current:
        # The first result after the latest loss that shows MMR again.
        last_loss = max(i for i, lost in enumerate(loss) if lost)
        regained_on = next(
            r.collected_on
            for r, lost in zip(after[last_loss + 1 :], loss[last_loss + 1 :], strict=True)
            if not lost
        )
    return {
        "lost": bool(losses),
        "ever_lost": bool(losses),
        "first_lost_on": losses[0].collected_on.isoformat() if losses else None,
        "confirmed": confirmed_on is not None,
        "confirmed_on": iso(confirmed_on),
        "current": current,
        "regained_on": iso(regained_on),
    }


__all__ = ["LEVELS", "loss_of_mmr", "patient_status"]
