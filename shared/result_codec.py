"""A stored result's bytes in the results hash (``keys.results``).

The results hash keeps each result as msgpack (about a third of its canonical JSON): a map in the
canonical order (sorted names) with each known name stored as one letter, ``patient_id`` as nil (the
key says it), and a float with an integral value as an integer under the upper-case letter (1 to 5
bytes instead of 9). Decoding gives back the dict the canonical JSON gives, in the same order, with
the same types. The content hash (the idempotency check) is of the canonical JSON, as before; a
result stored as JSON (a release before this one) decodes as JSON.
"""

from __future__ import annotations

import msgpack
import orjson

_RESULT_NAMES = {
    "assay": "a", "bcr_abl1_copies": "b", "collected_at": "c", "control_copies": "d", "control_gene": "g",
    "conversion_factor": "f", "is_percent": "i", "is_percent_below": "j", "lab": "l", "patient_id": "p",
    "result_id": "r", "status": "s", "transcript": "t",
}  # fmt: skip
_RESULT_CODES = {code: name for name, code in _RESULT_NAMES.items()}
_INTEGRAL_FLOAT_CODES = {code.upper(): name for code, name in _RESULT_CODES.items()}
assert not set(_INTEGRAL_FLOAT_CODES) & set(_RESULT_CODES)
_MAX_EXACT_INT = 2**53


def encode_result(doc: dict) -> bytes:
    """The stored bytes of a validated result document (see above)."""
    packed = {}
    for name in sorted(doc):
        value = doc[name]
        code = _RESULT_NAMES.get(name)
        if code is None:  # a field this table does not know: kept under its name, marked
            packed["~" + name] = value
        elif name == "patient_id":
            packed[code] = None
        elif type(value) is float and value.is_integer() and abs(value) < _MAX_EXACT_INT:
            packed[code.upper()] = int(value)  # -0.0 never reaches the store: canonical numbers say 0
        else:
            packed[code] = value
    return msgpack.packb(packed, use_bin_type=True)


def decode_result(raw: bytes, patient_id: str) -> dict:
    """The result document of stored bytes (msgpack, or JSON as stored by a release before)."""
    if raw[:1] == b"{":
        return orjson.loads(raw)
    out = {}
    for code, value in msgpack.unpackb(raw, raw=False).items():
        name = _RESULT_CODES.get(code)
        if name is not None:
            out[name] = patient_id if name == "patient_id" else value
        elif code in _INTEGRAL_FLOAT_CODES:
            out[_INTEGRAL_FLOAT_CODES[code]] = float(value)
        else:
            out[code[1:]] = value
    return out
