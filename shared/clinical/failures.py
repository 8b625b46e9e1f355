"""The ELN 2020 failures and warnings that no transcript level shows: clinical events.

Source: clinical-rules.md section 9 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, milestones table
and text):
- Failure at any time: resistance mutations (e.g. T315I), high-risk additional chromosomal abnormalities
  (ACA) in Ph+ cells. Progression to accelerated or blast phase ends the chronic phase (a failure).
- Warning at baseline: high-risk ACA.

Where the code encodes more than the digest says (docs/clinical-rules.md says it too):
- "Baseline" is on or before the start of TKI therapy: a high-risk ACA found then is a warning, after it
  a failure; a mutation found then is a baseline finding that guides the choice of TKI (listed with the
  warnings), not a failure of a therapy not yet given. Without a recorded TKI start, both are failures.
- A resistance mutation or an emerging ACA is a failure of the TKI in use: it makes the ELN assessment
  "failure" from its date until the drug is changed (a new line, lines.py); it stays listed, and it
  still counts against "no prior failure" for TFR. Progression has no such end: a patient does not
  return to first chronic phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from shared.clinical.lines import DRUG, UNCERTAIN, TherapyHistory
from shared.clinical.therapy import Event

FAILURE_EVENT_TYPES = ("resistance_mutation", "high_risk_aca", "progression")
SOURCE = "ELN 2020 (Hochhaus, Leukemia 2020), milestones table: failure at any time; clinical-rules.md s.9"
BASELINE_SOURCE = "ELN 2020 (Hochhaus, Leukemia 2020), milestones table: warning at baseline; s.9"


def _what(event: Event) -> str:
    if event.type == "resistance_mutation":
        return f"resistance mutation {event.mutation or '(not named)'}"
    if event.type == "high_risk_aca":
        return f"high-risk additional chromosomal abnormality {event.karyotype or '(karyotype not given)'}"
    phase = f"{event.phase} phase" if event.phase else "accelerated or blast phase (phase not stated)"
    return f"progression to {phase}"


def _superseded_on(event: Event, history: TherapyHistory) -> date | None:
    # A failure of the TKI in use ends with a change of drug after it; progression never ends.
    if event.type == "progression":
        return None
    # A change of drug the day the finding is reported answers it (the switch is often that same day).
    later = [c.on for c in history.changes if c.kind in (DRUG, UNCERTAIN) and c.on >= event.on]
    return min(later) if later else None


# Found before any TKI was given, these are baseline findings, not failures of a therapy: an ACA is an
# ELN 2020 baseline warning, a mutation guides the choice of the first TKI. Progression is not: a patient
# diagnosed in accelerated or blast phase is not in first chronic phase.
BASELINE_TYPES = frozenset({"high_risk_aca", "resistance_mutation"})


def _baseline(event: Event, tki_started_on: date | None) -> bool:
    return event.type in BASELINE_TYPES and tki_started_on is not None and event.on <= tki_started_on


def eln_failures(
    events: Sequence[Event], history: TherapyHistory, tki_started_on: date | None
) -> list[dict[str, Any]]:
    """Every failure event, oldest first, each saying whether it still holds (`current`)."""
    out = []
    for event in events:
        if event.type not in FAILURE_EVENT_TYPES or _baseline(event, tki_started_on):
            continue
        ended = _superseded_on(event, history)
        out.append({
            "event_id": event.event_id,
            "type": event.type,
            "date": event.on.isoformat(),
            "reason": f"failure: {_what(event)} on {event.on.isoformat()} (ELN 2020)",
            "current": ended is None,
            "superseded_on": None if ended is None else ended.isoformat(),
            "source": SOURCE,
        })  # fmt: skip
    return out


def eln_warnings(events: Sequence[Event], tki_started_on: date | None) -> list[dict[str, Any]]:
    """Baseline findings from events: a high-risk ACA (an ELN 2020 warning at baseline) or a mutation
    found on or before the start of TKI therapy."""
    return [
        {
            "event_id": e.event_id,
            "type": e.type,
            "date": e.on.isoformat(),
            "reason": (
                f"warning at baseline: {_what(e)} (ELN 2020)"
                if e.type == "high_risk_aca"
                else f"at baseline: {_what(e)}, before any TKI (guides the choice of TKI; not a failure)"
            ),
            "source": BASELINE_SOURCE,
        }
        for e in events
        if _baseline(e, tki_started_on)
    ]


def progression(events: Sequence[Event]) -> Event | None:
    """The first progression event: the end of first chronic phase."""
    return next((e for e in events if e.type == "progression"), None)


def progression_text(event: Event) -> str:
    return _what(event)
