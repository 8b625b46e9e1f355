"""The Redis key schema: every key the API and the worker read or write is named here, nowhere else.

All keys start with ``cml:``. A patient's own keys carry the patient id as a Redis Cluster hash tag
(``{patient_id}``), so that they would share one slot if the store were ever sharded; the global
indexes below do not (a batch write spans patients, and runs as one Lua script on one instance).

Per patient (``P`` is the patient id, which the schemas restrict to ``[A-Za-z0-9._:-]``):

=====================================  ======  =====================================================
key                                    type    content
=====================================  ======  =====================================================
``cml:p:{P}:reg``                      string  registration document (JSON): cohorts, enrolled_on, tki...
``cml:p:{P}:results``                  hash    result_id -> stored result (latest version; msgpack, short
                                               names: shared/result_codec.py; JSON if stored before)
``cml:p:{P}:events``                   hash    event_id -> clinical event (JSON)
``cml:p:{P}:version``                  string  data version: incremented by every change to reg/results/events
``cml:p:{P}:status``                   string  computed status document (JSON), what GET .../status returns
``cml:p:{P}:status_v``                 string  the data version the stored status reflects
``cml:p:{P}:timeline``                 string  the timeline's envelope (JSON, pending flag first) and each
                                               result's classification (msgpack, deflated): GET .../results
                                               puts them beside the stored results (shared/timelines.py)
=====================================  ======  =====================================================

Global:

=====================================  ======  =====================================================
``cml:patients``                       set     registered patient ids
``cml:result-index``                   hash    result_id -> ``"<patient_id>|<sha256 of canonical content>"``
``cml:dirty:patients``                 zset    patient id -> ms time it became dirty (status behind data)
``cml:enqueued:patients``              zset    patient id -> ms time a recompute task was last enqueued
``cml:task:<id>``                      string  a tracking document for GET /v1/tasks/{id} (expires)
``cml:workers``                        zset    worker hostname -> ms time of its last heartbeat
``cml:worker-queues``                  hash    worker hostname -> the queues it consumes (JSON list), written
                                               with its heartbeat and forgotten with it
``cml:dirty:cohorts``                  zset    cohort id -> ms time it became dirty (statistics behind)
``cml:enqueued:cohorts``               zset    cohort id -> ms time a refresh task was last enqueued
``cml:cohorts``                        set     cohort ids named by any patient or defined by PUT
``cml:dead:patient`` / ``cml:dead:cohort``  hash  id -> last failure (JSON: task, error, at); ops retry
``cml:lag:patient``                    list    recent recompute lags in ms (202 to status written), capped
``cml:rules``                          string  fingerprint of the rules the stored documents were made by
``cml:audit``                          stream  one entry per accepted write: who, what, when, ids
``cml:metrics:tasks``                  hash    task counters and latency histogram (Prometheus export)
``cml:ratelimit:<n>:<period s>:<operation>:<len>:<key id>``  string  requests in a fixed window (expires)
``cml:idem:<key id>:<Idempotency-Key>`` string  a batch post's request hash and response (expires)
``cml:hl7ack:<caller>:<sender>:<id>`` string  the AA answered to an HL7 v2 message (MSH-3^MSH-4 sender, MSH-10
                                               id) and its content hash, for re-sends (expires)
``cml:wl:ids``                         zset    every registered patient id, score 0 (pages by id, ZRANGEBYLEX)
``cml:wl:rows``                        hash    patient id -> worklist row (JSON: level, ELN, actions, due)
``cml:wl:due``                         zset    patient id -> next sample due (date ordinal)
``cml:wl:level:<level>``               set     patients whose current response level is <level>
``cml:wl:action:<code>``               set     patients with the open action <code>
=====================================  ======  =====================================================

Per cohort (``C`` is the cohort id, same alphabet as patient ids):

=====================================  ======  =====================================================
``cml:cohort:{C}:def``                 string  cohort definition (JSON); absent = the default definition
``cml:cohort:{C}:members``             set     patient ids of cohort C
``cml:cohort:{C}:followup``            hash    patient id -> follow-up record (JSON, shared.cohorts)
``cml:cohort:{C}:version``             string  data version: bumped by a member's record or the definition
``cml:cohort:{C}:stats``               string  statistics document (JSON) at the default horizons
``cml:cohort:{C}:stats_v``             string  the data version the stored statistics reflect
``cml:cohort:{C}:awaiting``            set     members with an acknowledged write not yet in their follow-up
                                               record (their status is behind): the statistics are pending
``cml:cohort:{C}:arrays``              hash    ``patients``/``time``/``status``: the evaluable data, for
                                               other horizons and comparisons without a refresh
``cml:cohort:{C}:lock``                string  held by the one refresh running for C (SET NX PX)
``cml:cohort:{C}:refreshes``           string  how many refreshes were stored (ops: coalescing at work)
``cml:cohort:{C}:image:<v>:<fmt>``     string  a rendered curve (png/svg) of data version v (expires)
=====================================  ======  =====================================================

The invariant the worker relies on (design-notes.md, "Tasks are hints"): every write bumps the
patient's version and adds the patient to the dirty set in the same atomic script as the data; a
recompute clears the dirty mark only if the version is still the one it computed from.

The invariant readers rely on (README, "What pending means"): the same script marks the patient's
status and timeline ``pending``, adds the patient to the awaiting set of each of its cohorts and marks
their statistics ``pending``; a document says ``pending: false`` again only once it reflects every
acknowledged write (``shared.store``, the ``PENDING_LUA`` Lua helpers).
"""

from __future__ import annotations

PREFIX = "cml:"

PATIENTS = f"{PREFIX}patients"
RESULT_INDEX = f"{PREFIX}result-index"
DIRTY_PATIENTS = f"{PREFIX}dirty:patients"
ENQUEUED_PATIENTS = f"{PREFIX}enqueued:patients"
WORKERS = f"{PREFIX}workers"
WORKER_QUEUES = f"{PREFIX}worker-queues"
COHORTS = f"{PREFIX}cohorts"
DIRTY_COHORTS = f"{PREFIX}dirty:cohorts"
ENQUEUED_COHORTS = f"{PREFIX}enqueued:cohorts"


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


def patient_key_parts() -> tuple[str, str]:
    """(head, tail) such that head + P + tail + suffix is patient P's key (for Lua scripts that
    reach every patient from the patients set)."""
    head, tail = _patient("\0", "").split("\0")
    return head, tail


def rate_limit(amount: int, period_s: int, operation: str, key_id: str) -> str:
    """Requests of one API key to one operation in its current window of a budget of ``amount`` per
    ``period_s`` (services/api/ratelimit.py; the window starts at its first request, expires with it)."""
    # Length-prefixed like idempotency(): key names may hold ':'.
    return f"{PREFIX}ratelimit:{amount}:{period_s}:{operation}:{len(key_id)}:{key_id}"


def idempotency(caller: str, idempotency_key: str) -> str:
    # The caller's name is length-prefixed: names may hold ':', and ("a", "b:c") must not meet ("a:b", "c").
    return f"{PREFIX}idem:{len(caller)}:{caller}:{idempotency_key}"


def hl7_ack(caller: str, sender: str, control_id: str) -> str:
    """The ACK remembered for an HL7 v2 message (shared/interop/hl7v2.py). Length-prefixed parts, as in
    idempotency(): caller, sender and control id may each hold ':'."""
    parts = ":".join(f"{len(p)}:{p}" for p in (caller, sender, control_id))
    return f"{PREFIX}hl7ack:{parts}"


def timeline(patient_id: str) -> str:
    return _patient(patient_id, "timeline")


def task(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def _cohort(cohort_id: str, suffix: str) -> str:
    return f"{PREFIX}cohort:{{{cohort_id}}}:{suffix}"


def cohort_key_parts() -> tuple[str, str]:
    """(head, tail) such that head + C + tail + suffix is cohort C's key: for Lua scripts that
    reach a patient's cohorts, which they learn from the stored registration."""
    head, tail = _cohort("\0", "").split("\0")
    return head, tail


def cohort_members(cohort_id: str) -> str:
    return _cohort(cohort_id, "members")


def cohort_definition(cohort_id: str) -> str:
    return _cohort(cohort_id, "def")


def cohort_followup(cohort_id: str) -> str:
    return _cohort(cohort_id, "followup")


def cohort_version(cohort_id: str) -> str:
    return _cohort(cohort_id, "version")


def cohort_stats(cohort_id: str) -> str:
    return _cohort(cohort_id, "stats")


def cohort_stats_version(cohort_id: str) -> str:
    return _cohort(cohort_id, "stats_v")


def cohort_awaiting(cohort_id: str) -> str:
    return _cohort(cohort_id, "awaiting")


def cohort_arrays(cohort_id: str) -> str:
    return _cohort(cohort_id, "arrays")


def cohort_lock(cohort_id: str) -> str:
    return _cohort(cohort_id, "lock")


def cohort_refreshes(cohort_id: str) -> str:
    return _cohort(cohort_id, "refreshes")


def cohort_image(cohort_id: str, version: int, fmt: str) -> str:
    return _cohort(cohort_id, f"image:{version}:{fmt}")


# The worklist's indexes (shared/worklist.py), kept by the status commit.
WORKLIST_IDS = f"{PREFIX}wl:ids"
WORKLIST_ROWS = f"{PREFIX}wl:rows"
WORKLIST_DUE = f"{PREFIX}wl:due"
WORKLIST_LEVEL_HEAD = f"{PREFIX}wl:level:"
WORKLIST_ACTION_HEAD = f"{PREFIX}wl:action:"


def worklist_level(level: str) -> str:
    return WORKLIST_LEVEL_HEAD + level


def worklist_action(code: str) -> str:
    return WORKLIST_ACTION_HEAD + code


AUDIT = f"{PREFIX}audit"
RULES = f"{PREFIX}rules"
TASK_METRICS = f"{PREFIX}metrics:tasks"
LAG_PATIENTS = f"{PREFIX}lag:patient"
DEAD = {"patient": f"{PREFIX}dead:patient", "cohort": f"{PREFIX}dead:cohort"}
# Kombu's own key: messages delivered to a worker and not yet acknowledged.
KOMBU_UNACKED = "unacked"

# Work queues by kind: the dirty set (the truth) and the enqueued set (a task is pending).
DIRTY = {"patient": DIRTY_PATIENTS, "cohort": DIRTY_COHORTS}
ENQUEUED = {"patient": ENQUEUED_PATIENTS, "cohort": ENQUEUED_COHORTS}
