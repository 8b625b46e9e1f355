"""Lines of therapy: which drug, which dose, and every change with its coded reason.

Source: clinical-rules.md section 8 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, treatment and
TFR sections). A line is a drug, not a brand and not a dose: a new line starts when the drug changes
(drugs.py maps every brand and generic product to its drug). A change of dose keeps the line; a switch
between a brand and its generic changes nothing (not the line, not the dose history). A restart of the
same drug after a stop keeps the line; a restart on another drug starts one.

ELN 2020 TFR minimal criterion: "first-line TKI, or second-line if intolerance was the only reason for
changing TKI"; a second line for any other reason, and any third line, meet neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import product
from typing import Any

from shared.clinical.drugs import drug, product_key, resolve_tki, tki_generic
from shared.clinical.therapy import INTOLERANCE, Event, reason_code
from shared.clinical.timeline import parse_date

# Kinds of change (the status lists each with its reason).
DRUG, DOSE, PRODUCT, RESTART, STOP, UNCHANGED = "drug", "dose", "product", "restart", "stop", "unchanged"
# A drug change that cannot be told from a dose change: the drug before it was not recorded, or a name
# is not in the vocabulary (data stored before drugs.py).
UNCERTAIN = "drug_or_dose"
# Uncertain changes are decided by trying each reading; more than this many is left undecided.
MAX_UNCERTAIN = 4


@dataclass(frozen=True)
class Change:
    on: date
    kind: str
    event_id: str
    from_tki: str | None
    to_tki: str | None
    from_dose_mg: float | None
    to_dose_mg: float | None
    reason: str | None
    reason_text: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.on.isoformat(),
            "kind": self.kind,
            "event_id": self.event_id,
            "from_tki": self.from_tki,
            "to_tki": self.to_tki,
            "from_dose_mg": self.from_dose_mg,
            "to_dose_mg": self.to_dose_mg,
            "reason": self.reason,
            "reason_text": self.reason_text,
        }


@dataclass
class TherapyHistory:
    first_tki: str | None
    started_on: date | None
    changes: list[Change] = field(default_factory=list)
    current_tki: str | None = None
    dose_mg: float | None = None
    # The last start, restart, change of drug or change of dose: "a stable dose" counts from here.
    stable_since: date | None = None
    unknown_tki: list[str] = field(default_factory=list)
    product: str | None = None  # the product as written (a brand, a generic product, or the generic)

    @property
    def line_changes(self) -> list[Change]:
        return [c for c in self.changes if c.kind in (DRUG, UNCERTAIN)]

    @property
    def line(self) -> int | None:
        """The current line (1 = first), None when a change cannot be told from a change of dose."""
        if self.first_tki is None and self.started_on is None and not self.changes:
            return None
        if any(c.kind == UNCERTAIN for c in self.changes):
            return None
        return 1 + len(self.line_changes)

    def lines(self) -> list[dict[str, Any]]:
        starts: list[tuple[str | None, date | None, Change | None]] = [
            (self.first_tki, self.started_on, None),
            *((c.to_tki, c.on, c) for c in self.line_changes),
        ]
        known = self.line is not None
        out = []
        for n, (tki, on, change) in enumerate(starts, start=1):
            ended = starts[n][1] if n < len(starts) else None
            out.append({
                "line": n if known else None,
                "tki": tki,
                "tki_class": _class(tki),
                "started_on": None if on is None else on.isoformat(),
                "ended_on": None if ended is None else ended.isoformat(),
                "reason": None if change is None else change.reason,
                "reason_text": None if change is None else change.reason_text,
            })  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_tki": self.current_tki,
            "current_tki_class": _class(self.current_tki),
            "dose_mg": self.dose_mg,
            "line": self.line,
            "lines": self.lines(),
            "changes": [c.to_dict() for c in self.changes],
            "stable_since": None if self.stable_since is None else self.stable_since.isoformat(),
            "unknown_tki": self.unknown_tki,
            "source": "clinical-rules.md s.7-8 (ELN 2020: a line is a drug; brand and generic are one)",
        }


def _class(generic: str | None) -> str | None:
    found = drug(generic)
    return None if found is None else found.tki_class


def _known(name: str | None) -> bool:
    return name is not None and resolve_tki(name) is not None


def therapy_history(registration: Mapping[str, Any], events: Sequence[Event]) -> TherapyHistory:
    """Walk the registration and the events (sorted) into lines, doses and changes."""
    raw_first = registration.get("tki")
    started = registration.get("tki_started_on")
    history = TherapyHistory(
        first_tki=tki_generic(raw_first),
        started_on=None if started is None else parse_date(started),
        current_tki=tki_generic(raw_first),
        dose_mg=registration.get("dose_mg"),
        product=registration.get("tki_product") or raw_first,
    )
    history.stable_since = history.started_on
    names = [raw_first, *(e.tki for e in events)]
    history.unknown_tki = sorted({n for n in names if n is not None and not _known(n)})
    on = history.started_on is not None or history.first_tki is not None
    for event in events:
        if event.type in ("tki_stopped", "death"):
            if on and event.type == "tki_stopped":
                history.changes.append(_change(event, STOP, history, history.current_tki, history.dose_mg))
                history.stable_since = None
            on = False
        elif event.type == "tki_changed":
            new_tki = event.drug or history.current_tki
            new_dose = event.dose_mg if event.dose_mg is not None else history.dose_mg
            kind = _kind(history, event, new_tki, new_dose, restarting=not on)
            history.changes.append(_change(event, kind, history, new_tki, new_dose))
            if kind in (DRUG, UNCERTAIN, DOSE, RESTART):
                history.stable_since = event.on
            history.current_tki, history.dose_mg, on = new_tki, new_dose, True
            history.product = event.tki_product or event.tki or history.product
    return history


def _kind(history: TherapyHistory, event: Event, new_tki: str | None, new_dose: float | None, *,
          restarting: bool) -> str:  # fmt: skip
    old = history.current_tki
    if event.tki is not None and old != new_tki:
        # Two names for one drug are the same drug; a change from an unrecorded or unknown drug might be
        # no change of drug at all.
        return DRUG if _known(old) and _known(new_tki) else UNCERTAIN
    if restarting:
        return RESTART
    if new_dose != history.dose_mg:
        return DOSE
    named = event.tki_product or event.tki
    if named is None or product_key(named) == product_key(history.product):
        return UNCHANGED  # the same drug, dose and product restated
    return PRODUCT


def _change(event: Event, kind: str, history: TherapyHistory, to_tki: str | None, to_dose: float | None):
    return Change(
        on=event.on,
        kind=kind,
        event_id=event.event_id,
        from_tki=history.current_tki,
        to_tki=to_tki,
        from_dose_mg=history.dose_mg,
        to_dose_mg=to_dose,
        reason=reason_code(event.reason),
        # A reason stored as free text before the codes is shown as text, never read as a code.
        reason_text=event.reason_text
        or (event.reason if event.reason and reason_code(event.reason) is None else None),
    )


def first_line_status(history: TherapyHistory) -> tuple[bool | None, str]:
    """ELN 2020 TFR minimal criterion: first-line TKI, or second-line when intolerance was the only reason
    for changing. Changes that may or may not have been changes of drug are tried both ways: the
    criterion is decided only where every reading agrees."""
    changes = history.line_changes
    if not changes:
        return True, "first-line TKI (no change of drug recorded)"
    uncertain = [c for c in changes if c.kind == UNCERTAIN]
    if len(uncertain) > MAX_UNCERTAIN:
        return None, "several changes whose drugs are not recorded or not recognised"
    verdicts: dict[bool | None, str] = {}
    for reading in product((True, False), repeat=len(uncertain)):
        counted = {id(c) for c, is_drug in zip(uncertain, reading, strict=True) if is_drug}
        drug_changes = [c for c in changes if c.kind == DRUG or id(c) in counted]
        met, detail = _verdict(drug_changes)
        verdicts.setdefault(met, detail)
    if len(verdicts) == 1:
        # Every reading agrees on the verdict; the detail is that of the reading with a change of drug.
        met, detail = next(iter(verdicts.items()))
        return met, detail + " (the drug before an unrecorded one is read both ways: same verdict)"
    return None, (
        "cannot tell the line: "
        + "; ".join(f"{c.on.isoformat()} change to {c.to_tki} from an unrecorded drug" for c in uncertain)
    )


def _verdict(drug_changes: Sequence[Change]) -> tuple[bool | None, str]:
    if not drug_changes:
        return True, "first-line TKI (no change of drug recorded)"
    if len(drug_changes) >= 2:
        path = " -> ".join([str(drug_changes[0].from_tki), *(str(c.to_tki) for c in drug_changes)])
        return False, f"line {1 + len(drug_changes)} ({path}): ELN 2020 allows first or second line only"
    change = drug_changes[0]
    what = f"TKI changed from {change.from_tki} to {change.to_tki} on {change.on.isoformat()}"
    if change.reason == INTOLERANCE:
        return True, f"second-line TKI, changed for intolerance only ({what})"
    if change.reason is None:
        text = f" (free text: {change.reason_text!r})" if change.reason_text else ""
        return None, (
            f"{what}, reason not coded{text}: a second line qualifies only if for intolerance alone"
        )
    return False, f"{what} for {change.reason}, not intolerance"
