"""A patient's result timeline (GET /v1/patients/{id}/results): stored once, as classifications, and
built on read with the results the store already keeps.

What the recompute stores under ``keys.timeline`` is the document's envelope, as the JSON it answers
with (``{"pending":false,"patient_id":...,"data_version":N``: the pending flag first, so the write
scripts flip it in place as before), then ``,"results":`` and the classifications: per result in
collection order its id and its classification's values (None: entered in error), msgpack, deflated
row by row (about 55 bytes a result where the whole document took 700: the result itself is in the
results hash, once). The read (one script: this value and the results hash, one round trip) puts each
stored result beside its classification and answers the document the recompute used to store, byte
for byte.

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

# Layout 1: a msgpack array of rows, each ``msgpack((result id, values))`` deflated alone with the preset
# dictionary below (raw deflate, RFC 1951, with a zdict). Each row is made once per stored content
# (the worker keeps it with the entry's score), so storing a timeline is a join, not a compression of
# the whole history; the dictionary (the reasons' fixed wording) brings a row from about 150 bytes to
# about 55. NEVER change the dictionary of a layout: stored rows need it to read. A new one is a new
# layout byte.
LAYOUT_1 = b"\x01"
_ZDICT_1 = (
    b"sensitivity_known sensitivity_limited deep_response_evaluable mr_value_is_lower_bound "
    b"undetectable below IS % as the laboratory reported it, without control-gene copies: sensitivity"
    b" unknown, so never MR4 or deeper (Cross 2015); scored at best"
    b" copies is below the needed to assess MR4 or deeper (Cross 2015): scored at best"
    b"; sample of limited sensitivity: copies is below the Cross 2015 recommends"
    b" undetectable with BCR as control gene ( copies): cannot be scored for deep response, Cross 2015"
    b" gives no BCR bands; shows IS <= %, scored at best"
    b" undetectable; copies is below the needed to score MR4 (Cross 2015), insufficient sensitivity for"
    b" MR4: shows IS <= %, scored at best"
    b" undetectable with copies, but the conversion factor makes its sensitivity IS %, too poor for MR4:"
    b" at best GUSB BCR NONE MR1 MR2 MR4.5 MR5"
    b" detectable at IS % (in the range), but ABL1 copies: MMR (Cross 2015 IS% table, bounds inclusive)"
    b" undetectable with ABL1 copies: MR4 (Cross 2015 undetectable bands; sensitivity IS 0.00%)"
)
# ... and five packed rows (msgpack's layout of the values, typical numbers), as the classifications of
# ABL1 100,000 copies with 40 BCR-ABL1, ABL1 120,000 undetectable, GUSB 250,000 with 12, ABL1 54,000
# with 2.5 and ABL1 8,000 undetectable scored by the rules of 2026-11-30 (written out: fixed for ever).
_ZDICT_1 += bytes.fromhex(
    "92a3532d319da34d4d52cb3fa47ae147ae147bcb400b2efb2bd82180c2c3cb3f50624dd2f1a9fcc3c3d9446465746563"
    "7461626c6520617420495320302e3034253a204d4d52202843726f7373203230313520495325207461626c652c20626f"
    "756e647320696e636c757369766529cb3fa47ae147ae147ba441424c31c2c392a3532d329da34d5235c0cb40145114e3"
    "78eca0c3c2cb3f4b4e81b4e81b4fc3c3d96b756e64657465637461626c6520776974682041424c31203132302c303030"
    "20636f706965733a204d5235202843726f7373203230313520756e64657465637461626c652062616e64733b2073656e"
    "736974697669747920495320302e303030383333333333333333332529cb3f4b4e81b4e81b4fa441424c31c2c392a353"
    "2d339da34d5234cb3f73a92a30553261cb40114668b2732420c2c3cb3f3a36e2eb1c432dc3c3d9466465746563746162"
    "6c6520617420495320302e30303438253a204d5234202843726f7373203230313520495325207461626c652c20626f75"
    "6e647320696e636c757369766529cb3f73a92a30553261a447555342c2c392a3532d349da34d5234cb3f72f684bda12f"
    "68cb4011567b0b4cdeffc2c3cb3f5e573ac901e574c3c3d94d64657465637461626c6520617420495320302e30303436"
    "32393632393633253a204d5234202843726f7373203230313520495325207461626c652c20626f756e647320696e636c"
    "757369766529cb3f72f684bda12f68a441424c31c2c392a3532d359da34d4d52c0cb400f39873e3bcdc0c3c2cb3f8999"
    "999999999ac2c2d99f756e64657465637461626c653b2041424c3120382c30303020636f706965732069732062656c6f"
    "77207468652031302c303030206e656564656420746f2073636f7265204d5234202843726f73732032303135292c2069"
    "6e73756666696369656e742073656e736974697669747920666f72204d52343a2073686f7773204953203c3d20302e30"
    "313235252c2073636f726564204d4d522061742062657374cb3f8999999999999aa441424c31c3c3"
)
_WBITS = -15  # raw deflate: no zlib header or checksum per row


def encode(envelope: Mapping, entries: Sequence[StoredEntry]) -> bytes:
    """The stored value of a timeline: ``envelope`` (pending first) and each entry's classification."""
    head = orjson.dumps(envelope)[:-1] + MARK
    rows = [_row(e) for e in entries]
    return head + LAYOUT_1 + _array_header(len(rows)) + b"".join(rows)


def _row(entry: StoredEntry) -> bytes:
    row = entry.memo.get("timeline_row")
    if row is None:
        deflate = zlib.compressobj(9, zlib.DEFLATED, _WBITS, 9, zlib.Z_DEFAULT_STRATEGY, _ZDICT_1)
        packed = msgpack.packb((entry.result_id, entry.values), use_bin_type=True)
        row = entry.memo["timeline_row"] = msgpack.packb(deflate.compress(packed) + deflate.flush())
    return row


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _split(stored: bytes) -> tuple[bytes, bytes]:
    at = stored.find(MARK)
    if at < 0:
        raise ValueError("not a stored timeline")
    at += len(MARK)
    return stored[:at], stored[at:]


def _deflated_rows(stored: bytes) -> list[bytes] | None:
    _, payload = _split(stored)
    if payload[:1] != LAYOUT_1:
        return None
    return msgpack.unpackb(payload[1:], use_list=True, raw=False)


# The read is a pure function of the stored bytes: an API process keeps what it decoded (bounded, cleared
# when full), so reading a timeline again costs lookups and a join, not decoding every result.
MEMO_SIZE = 50_000
_ROW_MEMO: dict[bytes, tuple] = {}  # deflated row -> (result id, values)
_ENTRY_MEMO: dict[tuple, bytes] = {}  # (patient id, stored result, deflated row or None) -> entry JSON


def _remember(memo: dict, key: object, value: object) -> None:
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


def _inflate(row: bytes) -> tuple:
    got = _ROW_MEMO.get(row)
    if got is None:
        inflate = zlib.decompressobj(_WBITS, _ZDICT_1)
        got = msgpack.unpackb(inflate.decompress(row) + inflate.flush(), use_list=False, raw=False)
        _remember(_ROW_MEMO, row, got)
    return got


def rows(stored: bytes) -> list | None:
    """The stored (result id, classification values) rows; None for a whole document stored by a release
    before this one (its results inline)."""
    deflated = _deflated_rows(stored)
    return None if deflated is None else [_inflate(row) for row in deflated]


def classification(values: Sequence | None) -> dict | None:
    return None if values is None else dict(zip(FIELDS, values, strict=True))


def scored_now(doc: Mapping) -> tuple[bool, dict | None]:
    """(withdrawn, classification) of a result's current content, scored at read time."""
    if doc.get("status") == WITHDRAWN_STATUS:
        return True, None
    return False, score_result(doc).classification.to_dict()


def _entry(patient_id: str, raw: bytes, row: bytes, values: tuple | None, pending: bool) -> bytes:
    """One entry's JSON: the stored result with ``withdrawn`` and ``classification`` (stored, or scored
    from the current content while the timeline is pending)."""
    key = (patient_id, raw, None if pending else row)
    got = _ENTRY_MEMO.get(key)
    if got is None:
        doc = decode_result(raw, patient_id)
        withdrawn, cls = scored_now(doc) if pending else (values is None, classification(values))
        got = orjson.dumps({**doc, "withdrawn": withdrawn, "classification": cls})
        _remember(_ENTRY_MEMO, key, got)
    return got


def build(stored: bytes, results: Mapping[str, bytes], patient_id: str) -> bytes:
    """The timeline document's bytes, as GET /v1/patients/{id}/results answers them (orjson writes a list
    as its items joined by commas: the same bytes as the whole document dumped at once)."""
    deflated = _deflated_rows(stored)
    if deflated is None:
        return stored  # stored whole by the release before: already the document
    head, _ = _split(stored)
    pending = stored.startswith(PENDING_TRUE)
    parts = []
    for row in deflated:
        rid, values = _inflate(row)
        raw = results.get(rid)
        if raw is None:  # never deleted by the service; tolerate a hand-edited store
            continue
        parts.append(_entry(patient_id, raw, row, values, pending))
    return head + b"[" + b",".join(parts) + b"]}"


def results_map(flat: Iterable) -> dict[str, bytes]:
    """HGETALL's flat reply (field, value, ...) as result id -> stored bytes."""
    it = iter(flat)
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in zip(it, it, strict=True)}
