"""Eligibility rules: ACTIM trial entry (clinical-rules.md s.5) and ELN 2020 TFR requirements (s.4).

Every criterion is {"met": True | False | None, "detail": str}; None means "cannot be told from the data".
A set of criteria combines tri-state: False if any is False, else None if any is None, else True.
Durations are exact on whole days with months = days / 30.4375 (clinical-rules.md s.6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from fractions import Fraction
from typing import Any

from shared.clinical.drugs import drug
from shared.clinical.failures import progression, progression_text
from shared.clinical.lines import TherapyHistory, first_line_status
from shared.clinical.milestones import failures_after_12m
from shared.clinical.response import MMR_THRESHOLD, MR4_5_THRESHOLD, at_least
from shared.clinical.scored import ScoredResult
from shared.clinical.therapy import Event, TkiCourse, off_tki_periods, taken_on_tki
from shared.clinical.timeline import days_between, parse_date, years_to_days

# ACTIM entry (EudraCT 2009-011675-79): imatinib for at least 2 years at a stable daily dose.
ACTIM_TKI = "imatinib"
ACTIM_STABLE_DAYS = years_to_days(2)  # 730.5 days

# ELN 2020 requirements for TKI discontinuation (Hochhaus 2020, TFR section).
# > 5 years of TKI (> 4 years for second-generation TKIs): per drug in drugs.TKIS.
TFR_TKI_DAYS = years_to_days(5)
TFR_TKI_DAYS_2G = years_to_days(4)
TFR_DMR_DAYS_MINIMAL = years_to_days(2)  # MR4 or deeper lasting > 2 years
TFR_DMR_DAYS_MR4 = years_to_days(3)  # optimal: > 3 years if MR4
TFR_DMR_DAYS_MR4_5 = years_to_days(2)  # optimal: > 2 years if MR4.5
TYPICAL_TRANSCRIPTS = frozenset({"e13a2", "e14a2"})


def criterion(met: bool | None, detail: str) -> dict[str, Any]:
    return {"met": met, "detail": detail}


def combine(values: Sequence[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


def _years(days: Fraction) -> str:
    return f"{float(days / years_to_days(1)):g} years ({float(days):g} days)"


# ---- ACTIM (clinical-rules.md section 5) ----


def actim_eligibility(
    course: TkiCourse,
    history: TherapyHistory,
    latest: ScoredResult | None,
    documented: date | None,
) -> dict[str, Any]:
    """ACTIM entry, judged on the latest result: where its sensitivity cannot tell, the criterion is
    unknown (repeat the sample), never taken from an older result."""
    criteria = {
        "imatinib_2_years_stable_dose": _actim_imatinib(course, history, documented),
        "in_mmr": _actim_in_mmr(latest),
        "not_in_mr4_5": _actim_not_mr4_5(latest),
    }
    return {"eligible": combine([c["met"] for c in criteria.values()]), "criteria": criteria}


def _actim_imatinib(course: TkiCourse, history: TherapyHistory, documented: date | None) -> dict[str, Any]:
    if course.current_tki is None:
        return criterion(None, "TKI not recorded")
    if course.current_tki != ACTIM_TKI:
        return criterion(False, f"current TKI is {course.current_tki}, not imatinib")
    if not course.on_tki:
        return criterion(False, "not on TKI (stopped)")
    since = history.stable_since
    if since is None or documented is None:
        return criterion(None, "TKI start date not recorded")
    # A stable dose since the last start, restart, change of drug or of dose (a brand for its generic is
    # none: lines.py), up to the last date that documents the patient on it (clinical-rules.md s.8).
    days_on = days_between(since, documented)
    if days_on < ACTIM_STABLE_DAYS:
        return criterion(
            False,
            f"imatinib at this dose since {since.isoformat()}: {days_on} days to {documented.isoformat()},"
            " fewer than 730.5 (2 years)",
        )
    return criterion(
        True,
        f"imatinib at a stable dose since {since.isoformat()}, >= 2 years (730.5 days) by"
        f" {documented.isoformat()}",
    )


def _actim_in_mmr(latest: ScoredResult | None) -> dict[str, Any]:
    if latest is None:
        return criterion(None, "no result")
    value = latest.classification.upper_is_percent_exact
    if not latest.classification.detectable and value > MMR_THRESHOLD:
        return criterion(
            None, f"latest result {latest.result_id}: undetectable, sensitivity too poor to tell"
        )
    met = value <= MMR_THRESHOLD
    return criterion(
        met,
        f"latest result {latest.result_id}: {latest.classification.level}, IS{' <=' if met else ' >'} 0.1%",
    )


def _actim_not_mr4_5(latest: ScoredResult | None) -> dict[str, Any]:
    if latest is None:
        return criterion(None, "no result")
    c = latest.classification
    if c.sensitivity_limited:
        # Undetectable below the MR4 band or with BCR, or detectable but capped at MMR by an inadequate
        # sample: it cannot assess MR4 or deeper (Cross 2015), so neither in nor out of MR4.5.
        return criterion(None, f"latest result {latest.result_id}: the sample cannot assess MR4.5; repeat")
    if c.detectable:
        # ACTIM: "not in MR4.5" is IS% > 0.0032%, compared exactly on the measured value.
        met = c.is_percent_exact > MR4_5_THRESHOLD
        return criterion(met, f"latest result {latest.result_id}: IS{' >' if met else ' <='} 0.0032%")
    # Undetectable: the Cross 2015 band decides (e.g. 10,000-31,999 ABL1 copies is scored MR4, not MR4.5).
    met = not at_least(c.level, "MR4.5")
    return criterion(met, f"latest result {latest.result_id}: undetectable, scored {c.level}")


# ---- TFR (clinical-rules.md section 4) ----


def tfr_eligibility(
    registration: Mapping[str, Any],
    course: TkiCourse,
    history: TherapyHistory,
    events: Sequence[Event],
    results: Sequence[ScoredResult],
    milestones: Sequence[Mapping[str, Any]],
    documented: date | None,
    failures: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    tki_days = _tki_days(registration, events, documented)
    minimal = {
        "first_line_tki": criterion(*first_line_status(history)),
        "typical_transcript": _typical_transcript(results),
        "tki_duration": _tki_duration(course.current_tki, tki_days),
        "dmr_over_2_years": _dmr_minimal(results),
        "no_prior_failure": _no_prior_failure(registration, events, results, milestones, failures),
    }
    minimal_eligible = combine([c["met"] for c in minimal.values()])
    optimal = {
        "tki_over_5_years": _over(tki_days, TFR_TKI_DAYS, "TKI therapy"),
        "dmr_duration": _dmr_optimal(results),
    }
    return {
        "mandatory": _mandatory(events),
        "minimal": {"eligible": minimal_eligible, "criteria": minimal},
        # Optimal is in addition to minimal (ELN 2020), so it cannot be True while minimal is not.
        "optimal": {
            "eligible": combine([minimal_eligible, *[c["met"] for c in optimal.values()]]),
            "criteria": optimal,
        },
        "tki_stopped": None if course.last_stopped_on is None else course.last_stopped_on.isoformat(),
        "note": _tfr_note(course),
    }


def _mandatory(events: Sequence[Event]) -> dict[str, Any]:
    # ELN 2020 mandatory: CML in first chronic phase only (the others, motivation and laboratory access,
    # are not in the data). Progression ends first chronic phase (clinical-rules.md s.9).
    ended = progression(events)
    if ended is not None:
        return criterion(
            False, f"{progression_text(ended)} on {ended.on.isoformat()}: no longer in first chronic phase"
        )
    return criterion(None, "not assessed: first chronic phase, motivation and laboratory access not recorded")


def _tfr_note(course: TkiCourse) -> str:
    if course.last_stopped_on is None:
        return "TKI not stopped; mandatory criteria are not derivable from assays"
    if course.on_tki:
        return f"TKI stopped on {course.last_stopped_on.isoformat()} and since restarted"
    return f"TKI stopped on {course.last_stopped_on.isoformat()}: treatment-free remission under way"


def _tki_days(
    registration: Mapping[str, Any], events: Sequence[Event], documented: date | None
) -> int | None:
    """Days on TKI: from the start to the last date documenting therapy (a result or a therapy event,
    never a death or a loss to follow-up: clinical-rules.md s.8), or to the stop if off TKI (TFR under
    way), less the time off between an earlier stop and its restart (the periods the milestones leave out)."""
    started = registration.get("tki_started_on")
    if started is None or documented is None:
        return None
    start = parse_date(started)
    periods = off_tki_periods(events)
    end = next((stopped for stopped, restarted in periods if restarted is None), documented)
    off = sum(days_between(max(s, start), r) for s, r in periods if r is not None and r <= end and r > start)
    return days_between(start, end) - off


def _over(days: int | None, threshold: Fraction, what: str) -> dict[str, Any]:
    if days is None:
        return criterion(None, f"{what}: start date not recorded")
    met = days > threshold
    return criterion(
        met, f"{what} {days} days, {'more than' if met else 'not more than'} {_years(threshold)}"
    )


def _tki_duration(current_tki: str | None, days: int | None) -> dict[str, Any]:
    if days is None:
        return criterion(None, "TKI start date not recorded")
    known = drug(current_tki)
    if known is not None and known.tfr_min_days is None:
        # Ponatinib is given after failure (no TFR setting in ELN 2020); asciminib came after it.
        return criterion(
            None, f"ELN 2020 gives no minimal TKI duration for {current_tki} ({known.tki_class})"
        )
    if known is not None:
        what = f"TKI therapy ({current_tki}, {known.tki_class.replace('_', ' ')})"
        return _over(days, known.tfr_min_days, what)
    # Unknown drug: decide only where both thresholds agree.
    if days > TFR_TKI_DAYS:
        return criterion(True, f"TKI therapy {days} days, more than 5 years")
    if days <= TFR_TKI_DAYS_2G:
        return criterion(False, f"TKI therapy {days} days, not more than 4 years")
    return criterion(None, f"TKI therapy {days} days: > 4 but <= 5 years and the TKI is not recorded")


def _typical_transcript(results: Sequence[ScoredResult]) -> dict[str, Any]:
    stated = sorted({r.transcript.strip().lower() for r in results if r.transcript and r.transcript.strip()})
    if not stated:
        return criterion(None, "no result states the transcript")
    # "e13a2/e14a2" (both expressed) is typical; any other junction (e1a2, e19a2, ...) is atypical.
    atypical = [t for t in stated if not set(re.split(r"[\s/+,;&]+", t)) - {"", "and"} <= TYPICAL_TRANSCRIPTS]
    if atypical:
        return criterion(False, f"atypical transcript stated: {', '.join(atypical)}")
    return criterion(True, f"typical transcript: {', '.join(stated)}")


def current_run(results: Sequence[ScoredResult], level: str) -> list[ScoredResult]:
    """The unbroken run of results at `level` or deeper up to the latest result.

    A sensitivity-limited result (undetectable in too few control copies or with BCR; detectable in an
    inadequate sample, capped at MMR) cannot assess MR4 or deeper (Cross 2015): it neither extends nor
    ends the run. Any other result shallower than `level` ends it.
    """
    run: list[ScoredResult] = []
    for result in reversed(results):
        c = result.classification
        if c.sensitivity_limited:
            continue
        if not at_least(c.level, level):
            break
        run.insert(0, result)
    return run


def _run_days(results: Sequence[ScoredResult], level: str) -> int | None:
    # ELN 2020 asks for a deep response *lasting* > 2 (3) years: from the run's first result to its last,
    # the latest that shows it; an event recorded later does not lengthen it.
    run = current_run(results, level)
    if not run:
        return None
    return days_between(run[0].collected_on, run[-1].collected_on)


def _dmr_minimal(results: Sequence[ScoredResult]) -> dict[str, Any]:
    if not results:
        return criterion(None, "no result")
    days = _run_days(results, "MR4")
    if days is None:
        return criterion(False, "no current run of MR4 or deeper up to the latest result")
    met = days > TFR_DMR_DAYS_MINIMAL
    verdict = "more than" if met else "not more than"
    return criterion(met, f"MR4 or deeper for {days} days, {verdict} {_years(TFR_DMR_DAYS_MINIMAL)}")


def _dmr_optimal(results: Sequence[ScoredResult]) -> dict[str, Any]:
    if not results:
        return criterion(None, "no result")
    mr4_days = _run_days(results, "MR4")
    mr45_days = _run_days(results, "MR4.5")
    if mr45_days is not None and mr45_days > TFR_DMR_DAYS_MR4_5:
        return criterion(True, f"MR4.5 or deeper for {mr45_days} days, more than 2 years")
    if mr4_days is not None and mr4_days > TFR_DMR_DAYS_MR4:
        return criterion(True, f"MR4 or deeper for {mr4_days} days, more than 3 years")
    return criterion(
        False,
        f"MR4 or deeper for {mr4_days or 0} days (needs > 3 years), MR4.5 or deeper for {mr45_days or 0} days"
        " (needs > 2 years)",
    )


def _no_prior_failure(
    registration: Mapping[str, Any],
    events: Sequence[Event],
    results: Sequence[ScoredResult],
    milestones: Sequence[Mapping[str, Any]],
    failures: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    if failures:
        # A failure event counts whether or not a change of drug has since superseded it (failures.py).
        return criterion(False, "; ".join(f["reason"] for f in failures))
    started = registration.get("tki_started_on")
    if started is None:
        return criterion(None, "TKI start date not recorded: milestones not assessable")
    failed = [m["milestone"] for m in milestones if m["assessment"] == "failure"]
    later = failures_after_12m(parse_date(started), taken_on_tki(results, events))
    if failed or later:
        where = failed + [f"result {r.result_id} > 1% on {r.collected_on.isoformat()}" for r in later]
        return criterion(False, f"ELN 2020 failure: {', '.join(dict.fromkeys(where))}")
    return criterion(True, "no ELN 2020 milestone failure")
