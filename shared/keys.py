"""The Redis key schema: every key the API and the worker read or write is named here, nowhere else.

All keys start with ``cml:``. A patient's own keys carry the patient id as a Redis Cluster hash tag
(``{patient_id}``), so that they would share one slot if the store were ever sharded; the global
indexes below do not (a batch write spans patients, and runs as one Lua script on one instance).

Per patient (``P`` is the patient id, which the schemas restrict to ``[A-Za-z0-9._:-]``):

=====================================  ======  =====================================================
key                                    type    content
=====================================  ======  =====================================================
``cml:p:{P}:reg``                      string  registration document (JSON): cohorts, enrolled_on, tki...
``cml:p:{P}:results``                  hash    result_id -> stored result (JSON, canonical, latest version)
``cml:p:{P}:events``                   hash    event_id -> clinical event (JSON)
``cml:p:{P}:version``                  string  data version: incremented by every change to reg/results/events
``cml:p:{P}:status``                   string  computed status document (JSON), what GET .../status returns
``cml:p:{P}:status_v``                 string  the data version the stored status reflects
``cml:p:{P}:timeline``                 string  results with their classification (JSON), GET .../results
=====================================  ======  =====================================================

Global:

=====================================  ======  =====================================================
``cml:patients``                       set     registered patient ids
``cml:result-index``                   hash    result_id -> ``"<patient_id>|<sha256 of canonical content>"``
``cml:dirty:patients``                 zset    patient id -> ms time it became dirty (status behind data)
``cml:enqueued:patients``              zset    patient id -> ms time a recompute task was last enqueued
``cml:task:<id>``                      string  a tracking document for GET /v1/tasks/{id} (expires)
``cml:workers``                        zset    worker hostname -> ms time of its last heartbeat
``cml:cohorts``                        set     cohort ids named by any patient
``cml:cohort:{C}:members``             set     patient ids of cohort C
=====================================  ======  =====================================================

The invariant the worker relies on (design-notes.md, "Tasks are hints"): every write bumps the
patient's version and adds the patient to the dirty set in the same atomic script as the data; a
recompute clears the dirty mark only if the version is still the one it computed from.
"""

from __future__ import annotations

PREFIX = "cml:"

PATIENTS = f"{PREFIX}patients"
RESULT_INDEX = f"{PREFIX}result-index"
DIRTY_PATIENTS = f"{PREFIX}dirty:patients"
ENQUEUED_PATIENTS = f"{PREFIX}enqueued:patients"
WORKERS = f"{PREFIX}workers"
COHORTS = f"{PREFIX}cohorts"


def _patient(patient_id: str, suffix: str) -> str:
    return f"{PREFIX}p:{{{patient_id}}}:{suffix}"


def registration(patient_id: str) -> str:
    return _patient(patient_id, "reg")


def results(patient_id: str) -> str:
    return _patient(patient_id, "results")


def events(patient_id: str) -> str:
    return _patient(patient_id, "events")


def version(patient_id: str) -> str:
    return _patient(patient_id, "version")


def status(patient_id: str) -> str:
    return _patient(patient_id, "status")


def status_version(patient_id: str) -> str:
    return _patient(patient_id, "status_v")


def timeline(patient_id: str) -> str:
    return _patient(patient_id, "timeline")


def task(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def cohort_members(cohort_id: str) -> str:
    return f"{PREFIX}cohort:{{{cohort_id}}}:members"


def patient_key_prefix() -> str:
    """The prefix Lua scripts use to build per-patient keys (they receive ids, not keys)."""
    return f"{PREFIX}p:"
