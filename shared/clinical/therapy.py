"""TKI course from the registration and the clinical events: which drug, on or off, when it changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from shared.clinical.drugs import tki_generic
from shared.clinical.timeline import parse_date

T = TypeVar("T")

EVENT_TYPES = (
    "tki_stopped",
    "tki_changed",
    "add_on_started",
    "add_on_stopped",
    "progression",
    "death",
    "lost_to_follow_up",
    # ELN 2020 failures no transcript level shows (clinical-rules.md s.9), and a negative analysis.
    "resistance_mutation",
    "high_risk_aca",
    "mutation_analysis",
)
# Events that document the patient on therapy: with results, they end every duration on therapy.
# An event documenting absence (lost to follow-up, death) never extends one (clinical-rules.md s.8).
THERAPY_EVENTS = frozenset({"tki_stopped", "tki_changed", "add_on_started", "add_on_stopped"})
ENDS_THERAPY = frozenset({"tki_stopped", "death"})

# Why therapy changed, as codes (clinical-rules.md s.8): free text goes beside, in reason_text. A stop
# to attempt a treatment-free remission (ELN 2020 TFR section) has its own code.
REASON_CODES = ("intolerance", "resistance", "failure", "patient_choice", "treatment_free_remission", "other")
# ELN 2020 TFR: a second line keeps a patient eligible only when intolerance was the only reason.
INTOLERANCE = "intolerance"
PROGRESSION_PHASES = ("accelerated", "blast")


def reason_code(reason: str | None) -> str | None:
    """The code of a stored reason. Events stored before the codes carried free text: text equal to a
    code (any case) is that code; any other text is uncoded (None: the rules cannot tell what it says,
    and never match it further; it is shown as reason_text)."""
    if reason is None or not reason.strip():
        return None
    code = "_".join(reason.strip().lower().replace("-", " ").split())
    return code if code in REASON_CODES else None


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    on: date
    tki: str | None = None
    dose_mg: float | None = None
    reason: str | None = None
    note: str | None = None
    reason_text: str | None = None
    tki_product: str | None = None
    mutation: str | None = None
    karyotype: str | None = None
    phase: str | None = None

    @property
    def drug(self) -> str | None:
        """The generic name of the event's TKI (a brand is its generic), None if it names none."""
        return tki_generic(self.tki)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "type": self.type, "date": self.on.isoformat()}
        for key in _OPTIONAL_FIELDS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


_OPTIONAL_FIELDS = (
    "tki", "tki_product", "dose_mg", "reason", "reason_text", "mutation", "karyotype", "phase", "note",
)  # fmt: skip


@dataclass(frozen=True)
class TkiCourse:
    current_tki: str | None  # the generic name (lower case)
    on_tki: bool
    last_stopped_on: date | None


def normalise_tki(name: str | None) -> str | None:
    """The generic name for a TKI name (a brand is its generic); an unknown name lower-cased."""
    return tki_generic(name)


# On one day a stop comes before a change: stopping one drug and starting another the same day is a
# switch, not a stop that never ends, whatever the events' ids.
_SAME_DAY_ORDER = {"tki_stopped": 0, "tki_changed": 1}


def parse_events(raw_events: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Events sorted by (date, stop before change, event_id), so the result never depends on input order."""
    events = [
        Event(
            event_id=str(raw["event_id"]),
            type=raw["type"],
            on=parse_date(raw["date"]),
            **{key: raw.get(key) for key in _OPTIONAL_FIELDS},
        )
        for raw in raw_events
    ]
    return sorted(events, key=lambda e: (e.on, _SAME_DAY_ORDER.get(e.type, 2), e.event_id))


def tki_course(registration: Mapping[str, Any], events: Iterable[Event]) -> TkiCourse:
    """Walk the events in order: tki_stopped (and death) end therapy; tki_changed switches or restarts it."""
    current = normalise_tki(registration.get("tki"))
    on_tki = registration.get("tki_started_on") is not None or current is not None
    last_stopped_on = None
    for event in events:
        if event.type in ENDS_THERAPY:
            on_tki = False
            if event.type == "tki_stopped":
                last_stopped_on = event.on
        elif event.type == "tki_changed":
            on_tki = True  # a change of drug or dose after a stop means therapy restarted
            current = event.drug or current
    return TkiCourse(current_tki=current, on_tki=on_tki, last_stopped_on=last_stopped_on)


def documented_on(result_dates: Iterable[date], events: Iterable[Event]) -> date | None:
    """The last date that documents the patient on therapy: a result or a therapy event, never an event
    that documents absence (clinical-rules.md s.8). None with neither."""
    dates = [*result_dates, *(e.on for e in events if e.type in THERAPY_EVENTS)]
    return max(dates) if dates else None


def off_tki_periods(events: Iterable[Event]) -> list[tuple[date, date | None]]:
    """(stopped_on, restarted_on or None) for each stop of TKI therapy: a tki_changed restarts it."""
    periods: list[tuple[date, date | None]] = []
    stopped: date | None = None
    for event in events:
        if event.type == "tki_stopped" and stopped is None:
            stopped = event.on
        elif event.type == "tki_changed" and stopped is not None:
            periods.append((stopped, event.on))
            stopped = None
    if stopped is not None:
        periods.append((stopped, None))
    return periods


def on_tki_on(day: date, periods: Iterable[tuple[date, date | None]]) -> bool:
    """Whether a sample of `day` was taken on TKI: the stop day's sample still was; from the day after a
    stop up to the restart day it was not."""
    return not any(
        stopped < day and (restarted is None or day <= restarted) for stopped, restarted in periods
    )


def taken_on_tki(results: Sequence[T], events: Iterable[Event]) -> list[T]:
    """The results (anything with a `collected_on` date) whose sample was taken on TKI: what ELN 2020
    milestones and failures judge (a loss of response off TKI, in a TFR attempt, is the trigger to
    restart, not a treatment failure)."""
    periods = off_tki_periods(events)
    if not periods:  # never stopped: every sample was taken on TKI
        return list(results)
    return [r for r in results if on_tki_on(r.collected_on, periods)]
