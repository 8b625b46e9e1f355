"""The documents the worker stores for readers: a patient's status and result timeline.

Both are built from the whole stored history every time (so recomputation is idempotent) by the
clinical rules in :mod:`shared.clinical`; this module only adds the envelope readers rely on:
``computed_at`` and the ``data_version`` the document reflects.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.clinical.response import classify_result
from shared.clinical.status import patient_status
from shared.store import PatientData

WITHDRAWN = "entered-in-error"


def _classification(result: dict) -> dict | None:
    if result.get("status") == WITHDRAWN:
        return None
    return classify_result(
        control_gene=result["control_gene"],
        control_copies=result["control_copies"],
        bcr_abl1_copies=result.get("bcr_abl1_copies"),
        is_percent=result.get("is_percent"),
        conversion_factor=result.get("conversion_factor") or 1.0,
    ).to_dict()


def patient_documents(data: PatientData) -> tuple[dict, dict]:
    """(status document, timeline document) for one patient's stored data."""
    envelope = {
        "patient_id": data.patient_id,
        "computed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "data_version": data.version,
    }
    status = {**envelope, "pending": False, **patient_status(data.registration, data.results, data.events)}
    ordered = sorted(data.results, key=lambda r: (r["collected_at"][:10], r["collected_at"], r["result_id"]))
    timeline = {
        **envelope,
        "results": [
            {**r, "withdrawn": r.get("status") == WITHDRAWN, "classification": _classification(r)}
            for r in ordered
        ],
    }
    return status, timeline
