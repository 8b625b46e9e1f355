"""Builders for clinical-rule tests: results and events at day offsets from a TKI start date."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

START = date(2015, 1, 1)
PATIENT = "P-001"


def day(offset: int, start: date = START) -> str:
    return (start + timedelta(days=offset)).isoformat()


def registration(**overrides: Any) -> dict[str, Any]:
    reg: dict[str, Any] = {
        "patient_id": PATIENT,
        "cohorts": ["actim"],
        "enrolled_on": START.isoformat(),
        "tki": "imatinib",
        "tki_started_on": START.isoformat(),
        "dose_mg": 400,
    }
    reg.update(overrides)
    return reg


def result(
    result_id: str,
    offset: int,
    *,
    is_percent: float | None = None,
    bcr_abl1_copies: float | None = None,
    control_gene: str = "ABL1",
    control_copies: float = 100_000,
    status: str = "final",
    **extra: Any,
) -> dict[str, Any]:
    """A stored result; give is_percent (IS% directly) or bcr_abl1_copies (0 = undetectable)."""
    if is_percent is None and bcr_abl1_copies is None:
        raise AssertionError("test bug: give is_percent or bcr_abl1_copies")
    out: dict[str, Any] = {
        "result_id": result_id,
        "patient_id": PATIENT,
        "collected_at": day(offset),
        "control_gene": control_gene,
        "control_copies": control_copies,
        "bcr_abl1_copies": bcr_abl1_copies,
        "is_percent": is_percent,
        "conversion_factor": 1,
        "status": status,
        "lab": "lab-1",
        "assay": "assay-1",
        "transcript": None,
    }
    out.update(extra)
    return out


def undetectable(
    result_id: str, offset: int, control_copies: float = 100_000, **extra: Any
) -> dict[str, Any]:
    return result(result_id, offset, bcr_abl1_copies=0, control_copies=control_copies, **extra)


def event(event_id: str, type_: str, offset: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "date": day(offset), **extra}
