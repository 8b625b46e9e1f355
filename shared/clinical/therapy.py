"""TKI course from the registration and the clinical events: which drug, on or off, when it changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from shared.clinical.timeline import parse_date

T = TypeVar("T")

# ELN 2020: second-generation TKIs need > 4 years of therapy (not > 5) before a TFR attempt.
SECOND_GENERATION_TKIS = frozenset({"nilotinib", "dasatinib", "bosutinib"})
EVENT_TYPES = (
    "tki_stopped",
    "tki_changed",
    "add_on_started",
    "add_on_stopped",
    "progression",
    "death",
    "lost_to_follow_up",
)
# Changes of drug made for this reason alone keep a patient "first-line" for TFR (ELN 2020).
INTOLERANCE = "intolerance"


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    on: date
    tki: str | None = None
    dose_mg: float | None = None
    reason: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "type": self.type, "date": self.on.isoformat()}
        for key in ("tki", "dose_mg", "reason", "note"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class TkiCourse:
    current_tki: str | None  # lower case
    on_tki: bool
    last_stopped_on: date | None


def normalise_tki(name: str | None) -> str | None:
    return None if name is None else name.strip().lower()


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
            tki=raw.get("tki"),
            dose_mg=raw.get("dose_mg"),
            reason=raw.get("reason"),
            note=raw.get("note"),
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
        if event.type in ("tki_stopped", "death"):
            on_tki = False
            if event.type == "tki_stopped":
                last_stopped_on = event.on
        elif event.type == "tki_changed":
            on_tki = True  # a change of drug or dose after a stop means therapy restarted
            current = normalise_tki(event.tki) or current
    return TkiCourse(current_tki=current, on_tki=on_tki, last_stopped_on=last_stopped_on)


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
    return [r for r in results if on_tki_on(r.collected_on, periods)]


def first_line_status(registration: Mapping[str, Any], events: Iterable[Event]) -> tuple[bool | None, str]:
    """ELN 2020 TFR minimal criterion: first-line TKI, or second-line when intolerance was the only reason."""
    previous = normalise_tki(registration.get("tki"))
    switched_for_intolerance = False
    for event in events:
        if event.type != "tki_changed" or event.tki is None:
            continue  # a dose change keeps the same drug
        new = normalise_tki(event.tki)
        if new == previous:
            continue
        if (event.reason or "").strip().lower() == INTOLERANCE:
            previous, switched_for_intolerance = new, True
            continue
        when = event.on.isoformat()
        if previous is None:
            # The first drug is unknown, so whether this was a change of drug cannot be told.
            return None, f"changed to {new} on {when} (reason not intolerance); first TKI not recorded"
        return False, f"TKI changed from {previous} to {new} on {when} for a reason other than intolerance"
    if switched_for_intolerance:
        return True, "second-line TKI, changed for intolerance only"
    return True, "first-line TKI (no change of drug recorded)"
