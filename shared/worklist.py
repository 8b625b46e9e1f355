"""The worklist: who needs attention today, served from indexes the worker keeps as it stores a status.

As it stores a patient's status (store.commit_status, one script), the worker writes the patient's
worklist row (level, ELN assessment, open actions, next sample due) and moves the patient between the
index sets by level and by action, and in the due-date index. A worklist query intersects those sets
in Redis and reads one page of rows: it never reads a status document.

"Overdue" needs a clock, which a status does not have (shared/clinical/actions.py): the query compares
`next_sample_due` with its `as_of` date (today, UTC, unless given) and adds the `sample_overdue` action.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import redis

from shared import keys
from shared.pending import PENDING_TRUE

SAMPLE_OVERDUE = "sample_overdue"


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


MAX_PAGE = 1000

# The index maintenance, run inside store.commit_status's script when it stores a status.
# KEYS: rows hash, due zset; ARGV (from INDEX_ARGV on): row json, level ('' if none), due day number
# ('' if none), then the action codes. The index sets' names are built from `keys` prefixes.
INDEX_LUA = """
local function index_worklist(pid, rows_key, due_key, row, level, due, codes, level_head, action_head)
  local old = redis.call('HGET', rows_key, pid)
  if old then
    local prev = cjson.decode(old)
    if type(prev['response_level']) == 'string' then
      redis.call('SREM', level_head .. prev['response_level'], pid)
    end
    for _, a in ipairs(prev['actions']) do redis.call('SREM', action_head .. a['code'], pid) end
  end
  redis.call('HSET', rows_key, pid, row)
  if level ~= '' then redis.call('SADD', level_head .. level, pid) end
  for _, code in ipairs(codes) do redis.call('SADD', action_head .. code, pid) end
  if due ~= '' then redis.call('ZADD', due_key, tonumber(due), pid) else redis.call('ZREM', due_key, pid) end
end
"""


def worklist_row(status: dict[str, Any]) -> dict[str, Any]:
    """The row a worklist shows for a patient, from the status the worker is storing."""
    return {
        "patient_id": status["patient_id"],
        "data_version": status.get("data_version"),
        "response_level": status.get("response_level"),
        "response_level_on": status.get("response_level_on"),
        "eln_assessment": status.get("eln_assessment"),
        "on_tki": status.get("on_tki"),
        "actions": [
            {k: a.get(k) for k in ("code", "reason", "since", "due_by", "source")}
            for a in status.get("actions", [])
        ],
        "next_sample_due": status.get("next_sample_due"),
    }


def index_args(row: dict[str, Any]) -> list[Any]:
    """The script arguments that index one row (see INDEX_LUA)."""
    due = row["next_sample_due"]
    return [
        orjson.dumps(row),
        row["response_level"] or "",
        "" if due is None else date.fromisoformat(due).toordinal(),
        *dict.fromkeys(a["code"] for a in row["actions"]),
    ]


@dataclass(frozen=True)
class Query:
    cohort: str | None = None
    level: str | None = None
    action: str | None = None
    overdue: bool = False
    as_of: date | None = None
    after: str | None = None
    limit: int = 100


def encode_cursor(patient_id: str) -> str:
    return base64.urlsafe_b64encode(patient_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The patient id a cursor stands for; ValueError if it is not one this service made."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor from a previous page") from exc


def _overdue(q: Query) -> bool:
    return q.overdue or q.action == SAMPLE_OVERDUE


def _candidates(r: redis.Redis, q: Query, today: date) -> set[str]:
    sets = []
    if q.cohort is not None:
        sets.append(keys.cohort_members(q.cohort))
    if q.level is not None:
        sets.append(keys.worklist_level(q.level))
    if q.action is not None and q.action != SAMPLE_OVERDUE:
        sets.append(keys.worklist_action(q.action))
    pipe = r.pipeline(transaction=True)  # one snapshot of the indexes
    if sets:
        pipe.sinter(sets)
    else:
        pipe.smembers(keys.PATIENTS)
    if _overdue(q):
        # Due strictly before today: a sample due today is not yet overdue.
        pipe.zrangebyscore(keys.WORKLIST_DUE, "-inf", today.toordinal() - 1)
    found = pipe.execute()
    ids = {_decode(m) for m in found[0]}
    if _overdue(q):
        ids &= {_decode(m) for m in found[1]}
    return ids


def _matches(item: dict[str, Any], q: Query) -> bool:
    """A row read after the index sets still meets the filters (a status stored in between may have
    moved the patient: the row is the newer truth)."""
    if "response_level" not in item:  # no status stored yet: nothing to filter on
        return q.level is None and q.action is None and not q.overdue
    if q.level is not None and item["response_level"] != q.level:
        return False
    if q.action is not None and q.action not in {a["code"] for a in item["actions"]}:
        return False
    return not q.overdue or item["overdue"]


def _unfiltered_page(r: redis.Redis, q: Query) -> list[str] | None:
    """Without a filter, one page straight from the id index (ZRANGEBYLEX from the cursor: the cost of
    a page, not of every patient); None while the index is not yet complete (a deployment that added
    it fills it at the worker's rules check), when the query falls back to the patients set."""
    pipe = r.pipeline(transaction=True)
    pipe.zcard(keys.WORKLIST_IDS)
    pipe.scard(keys.PATIENTS)
    pipe.zrangebylex(keys.WORKLIST_IDS, "-" if q.after is None else f"({q.after}", "+", 0, q.limit + 1)
    indexed, registered, ids = pipe.execute()
    return [_decode(i) for i in ids] if indexed >= registered else None


def _filtered(q: Query) -> bool:
    return q.cohort is not None or q.level is not None or q.action is not None or q.overdue


def query(r: redis.Redis, q: Query, today: date) -> dict[str, Any]:
    """One page of the worklist, sorted by patient id, with the cursor of the next page. Each row says
    `pending` when its patient's stored status does (an acknowledged write not yet reflected: the
    row's level, actions and due date may change when it is)."""
    ids = None if _filtered(q) else _unfiltered_page(r, q)
    if ids is None:
        ids = sorted(i for i in _candidates(r, q, today) if q.after is None or i > q.after)
    page = ids[: q.limit]
    pipe = r.pipeline(transaction=True)
    pipe.hmget(keys.WORKLIST_ROWS, page) if page else None
    for pid in page:
        pipe.getrange(keys.status(pid), 0, len(PENDING_TRUE) - 1)
    replies = pipe.execute() if page else [[]]
    rows, flags = replies[0], replies[1:]
    items = [_item(pid, raw, flag, today) for pid, raw, flag in zip(page, rows, flags, strict=True)]
    more = len(ids) > q.limit
    return {
        "as_of": today.isoformat(),
        "patients": [item for item in items if _matches(item, q)],
        "next_cursor": encode_cursor(page[-1]) if more else None,
    }


def _item(patient_id: str, raw: bytes | None, flag: bytes, today: date) -> dict[str, Any]:
    if raw is None:  # registered, first status not stored yet
        return {"patient_id": patient_id, "pending": True, "actions": [], "next_sample_due": None,
                "overdue": False}  # fmt: skip
    row = orjson.loads(raw)
    due = row["next_sample_due"]
    row["overdue"] = due is not None and date.fromisoformat(due) < today
    row["pending"] = flag == PENDING_TRUE
    if row["overdue"]:
        row["actions"].append({
            "code": SAMPLE_OVERDUE,
            "reason": f"next sample was due on {due} (ELN 2020 monitoring frequency)",
            "since": due,
            "due_by": due,
            "source": "ELN 2020 monitoring frequency; clinical-rules.md s.10",
        })  # fmt: skip
    return row
