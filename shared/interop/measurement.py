"""From the coded values of one result, as a door read them, to the measurement fields of its document.

One rule for every door (HL7 v2 OBX segments, FHIR Observation value and components): the door reads each
coded value with its comparator and where it stood, and this module decides what the result document says.

- The control copies name the control gene (ABL1-COPIES -> ABL1); the conversion factor is taken as sent.
- BCR-ABL1 copies with control copies are the result: the service computes the IS% and the sample's
  sensitivity from them (Cross 2015). An IS% sent beside them is not stored, and the answer says so; when
  one of the two says undetectable and the other does not, the result is refused (the lab must say which).
- Undetectable is ``<`` (HL7 SN ``<^0.0032``, FHIR comparator ``<``) or 0 copies. With control copies it is
  ``bcr_abl1_copies: 0``, scored exactly as the JSON API scores it: the copies set the sensitivity and the
  stated limit is dropped. An IS% ``<`` without control copies is ``is_percent_below``: sensitivity unknown,
  never MR4 or deeper (shared/clinical/response.py).
- ``<`` on control copies or on the conversion factor means nothing: refused. A value sent twice: refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.interop.codes import Analyte


@dataclass(frozen=True)
class Value:
    """One coded value as a door read it; ``where`` is the door's own location (an HL7 field, a FHIRPath)."""

    analyte: Analyte
    number: float
    below: bool  # sent with the comparator '<'
    where: Any


@dataclass(frozen=True)
class Note:
    where: Any
    text: str
    error: bool = False  # an error refuses the result; otherwise the answer only says it


@dataclass
class Measurement:
    fields: dict[str, Any] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)  # document field -> where its value stood
    notes: list[Note] = field(default_factory=list)

    @property
    def errors(self) -> list[Note]:
        return [n for n in self.notes if n.error]

    def set(self, name: str, value: Any, where: Any) -> None:
        self.fields[name], self.where[name] = value, where


_BELOW_TAKEN_ON = ("is_percent", "bcr_abl1_copies")


def measurement(values: Sequence[Value]) -> Measurement:
    """The measurement fields of a result document from its coded values (see the module's docstring)."""
    out = Measurement()
    by_field: dict[str, Value] = {}
    for v in values:
        name = v.analyte.field
        if name in by_field:
            out.notes.append(Note(v.where, f"a second {v.analyte.code} value for one result", error=True))
        elif v.below and name not in _BELOW_TAKEN_ON:
            text = f"'<' is taken on the IS% or BCR-ABL1 copies only, not on {v.analyte.code}"
            out.notes.append(Note(v.where, text, error=True))
        else:
            by_field[name] = v
    control, cf = by_field.get("control_copies"), by_field.get("conversion_factor")
    if control is not None:
        out.set("control_gene", control.analyte.control_gene, control.where)
        out.set("control_copies", control.number, control.where)
    if cf is not None:
        out.set("conversion_factor", cf.number, cf.where)
    copies, is_value = by_field.get("bcr_abl1_copies"), by_field.get("is_percent")
    if copies is not None:
        _from_copies(out, copies, is_value)
    elif is_value is not None:
        _from_is(out, is_value, with_control=control is not None)
    return out


def _undetectable(v: Value) -> bool:
    return v.below or v.number == 0


def _from_copies(out: Measurement, copies: Value, is_value: Value | None) -> None:
    out.set("bcr_abl1_copies", 0.0 if copies.below else copies.number, copies.where)
    if is_value is None:
        return
    if _undetectable(copies) != _undetectable(is_value):
        text = "the IS% and the BCR-ABL1 copies disagree: one says undetectable, the other does not"
        out.notes.append(Note(is_value.where, text, error=True))
    else:
        text = "IS% not stored: the service computes it from the BCR-ABL1 and control copies"
        out.notes.append(Note(is_value.where, text))


def _from_is(out: Measurement, is_value: Value, with_control: bool) -> None:
    if not is_value.below:
        out.set("is_percent", is_value.number, is_value.where)
    elif with_control:
        out.set("bcr_abl1_copies", 0.0, is_value.where)
        text = "undetectable with control copies: stored as 0 BCR-ABL1 copies; the stated limit is not kept"
        out.notes.append(Note(is_value.where, text))
    else:
        out.set("is_percent_below", is_value.number, is_value.where)
