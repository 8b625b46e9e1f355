"""A patient's result timeline (GET /v1/patients/{id}/results): stored once, as classifications, and
built on read with the results the store already keeps.

What the recompute stores under ``keys.timeline`` is the document's envelope, as the JSON it answers
with (``{"pending":false,"patient_id":...,"data_version":N``: the pending flag first, so the write
scripts flip it in place as before), then ``,"results":`` and the classifications: per result in
collection order its id and its classification's values (None: entered in error), msgpack, deflated
(about 25 bytes a result where the whole document took 700: the result itself is in the results hash,
once). The read (one script: this value and the results hash, one round trip) puts each stored result
beside its classification and answers the document the recompute used to store, byte for byte.

While the stored value says pending, a result may have been replaced since it was classified: each
result is then scored from its current content (the same function, so an unchanged result scores the
same), so no entry ever shows a classification of other content. New results stay out of a pending
timeline (it reflects ``data_version``), as before.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import msgpack
import orjson

from shared.clinical.scored import WITHDRAWN_STATUS, StoredEntry, score_result
from shared.pending import PENDING_TRUE
from shared.result_codec import decode_result

MARK = b',"results":'
# The values of Classification.to_dict(), in its order (the document's classification objects).
FIELDS = (
    "level", "is_percent", "mr_value", "mr_value_is_lower_bound", "detectable", "sensitivity_percent",
    "adequate", "deep_response_evaluable", "reason", "upper_is_percent", "control_gene",
    "sensitivity_limited", "sensitivity_known",
)  # fmt: skip
_DEFLATE_LEVEL = 1  # the reasons repeat: level 1 takes most of what 6 would, several times faster
_ZLIB_HEAD = 0x78


def encode(envelope: Mapping, entries: Sequence[StoredEntry]) -> bytes:
    """The stored value of a timeline: ``envelope`` (pending first) and each entry's classification."""
    rows = [(e.result_id, e.values) for e in entries]
    head = orjson.dumps(envelope)[:-1] + MARK
    return head + zlib.compress(msgpack.packb(rows, use_bin_type=True), _DEFLATE_LEVEL)


def _split(stored: bytes) -> tuple[bytes, bytes]:
    at = stored.find(MARK)
    if at < 0:
        raise ValueError("not a stored timeline")
    at += len(MARK)
    return stored[:at], stored[at:]


def rows(stored: bytes) -> list | None:
    """The stored (result id, classification values) rows; None for a whole document stored by a release
    before this one (its results inline)."""
    _, payload = _split(stored)
    if not payload or payload[0] != _ZLIB_HEAD:
        return None
    return msgpack.unpackb(zlib.decompress(payload), use_list=False, raw=False)


def classification(values: Sequence | None) -> dict | None:
    return None if values is None else dict(zip(FIELDS, values, strict=True))


def scored_now(doc: Mapping) -> tuple[bool, dict | None]:
    """(withdrawn, classification) of a result's current content, scored at read time."""
    if doc.get("status") == WITHDRAWN_STATUS:
        return True, None
    return False, score_result(doc).classification.to_dict()


def entries(stored: bytes, results: Mapping[str, bytes], patient_id: str) -> list[dict] | None:
    """The timeline's entries: each stored result with ``withdrawn`` and ``classification``, in
    collection order (None: ``stored`` is a whole document of a release before, see ``build``)."""
    table = rows(stored)
    if table is None:
        return None
    pending = stored.startswith(PENDING_TRUE)
    out = []
    for rid, values in table:
        raw = results.get(rid)
        if raw is None:  # never deleted by the service; tolerate a hand-edited store
            continue
        doc = decode_result(raw, patient_id)
        if pending:
            withdrawn, cls = scored_now(doc)
        else:
            withdrawn, cls = values is None, classification(values)
        out.append({**doc, "withdrawn": withdrawn, "classification": cls})
    return out


def build(stored: bytes, results: Mapping[str, bytes], patient_id: str) -> bytes:
    """The timeline document's bytes, as GET /v1/patients/{id}/results answers them."""
    built = entries(stored, results, patient_id)
    if built is None:
        return stored  # stored whole by the release before: already the document
    head, _ = _split(stored)
    return head + orjson.dumps(built) + b"}"


def results_map(flat: Iterable) -> dict[str, bytes]:
    """HGETALL's flat reply (field, value, ...) as result id -> stored bytes."""
    it = iter(flat)
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in zip(it, it, strict=True)}
