"""Marshmallow schemas for the documents the service accepts (results, registrations, events).

They validate shape and ranges and normalise values (dates to ISO strings, defaults filled in), so
that the stored document is canonical: the same content always hashes the same. Clinical meaning
(levels, milestones) is not decided here but in :mod:`shared.clinical`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from shared.clinical.drugs import accepted_names, resolve_tki
from shared.clinical.therapy import EVENT_TYPES, PROGRESSION_PHASES, REASON_CODES
from shared.cohorts import DEFAULT_DEFINITION, ENDPOINT_LEVELS

# Ids become part of Redis keys and log lines: a conservative alphabet, no braces or '|'.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
# \Z, not $: "$" also matches before a trailing newline, which would end up inside a Redis key.
_ID = validate.Regexp(
    ID_PATTERN.removesuffix("$") + r"\Z",
    error="must be 1-64 characters: letters, digits and . _ : - (not first)",
)
# Words of the API's own routes under /v1/cohorts/: as a cohort id, `PUT /v1/cohorts/compare` would
# define a cohort that `GET /v1/cohorts/compare` can never reach.
RESERVED_COHORT_IDS = frozenset({"compare"})


def not_reserved_cohort_id(value: str) -> None:
    if value.lower() in RESERVED_COHORT_IDS:
        raise ValidationError(f"{value!r} is reserved (a route of the API); choose another cohort id")


_NAME = validate.Regexp(r"^(?=.*\S).{1,40}\Z", error="must be 1-40 characters, not blank")
# Quantitative PCR began on the International Scale in the 2000s; earlier dates are typing errors.
EARLIEST_DATE = date(1990, 1, 1)
CONTROL_GENES = ("ABL1", "GUSB", "BCR")
RESULT_STATUSES = ("final", "amended", "corrected", "entered-in-error")


def _latest_allowed() -> date:
    # One day of slack: a sample taken "today" in a time zone ahead of UTC is not in the future.
    return datetime.now(UTC).date() + timedelta(days=1)


def _check_date_range(d: date) -> None:
    if d < EARLIEST_DATE:
        raise ValidationError(f"must not be before {EARLIEST_DATE.isoformat()}")
    if d > _latest_allowed():
        raise ValidationError("must not be in the future")


class Number(fields.Float):
    """A JSON number: no strings, no booleans, no NaN or infinity."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("must be a number")
        if not math.isfinite(value):
            raise ValidationError("must be a finite number")
        # Canonical: -0.0 is 0.0 (a re-sent 0 is then the same content, not a conflict), ints are floats.
        return float(value) + 0.0


class ClinicalDate(fields.Field):
    """A calendar date, YYYY-MM-DD, between 1990 and today."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValidationError("must be a date, YYYY-MM-DD")
        try:
            d = date.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError("must be a valid calendar date") from exc
        _check_date_range(d)
        return d.isoformat()


class CollectedAt(fields.Field):
    """A date (YYYY-MM-DD) or an ISO 8601 date-time; kept as written once validated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str) or len(value) > 40:
            raise ValidationError("must be a date (YYYY-MM-DD) or an ISO 8601 date-time")
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return ClinicalDate()._deserialize(value, attr, data)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})?", value):
            raise ValidationError("must be a date (YYYY-MM-DD) or an ISO 8601 date-time")
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError("must be a valid ISO 8601 date-time") from exc
        _check_date_range(dt.date())
        return dt.isoformat()


class _Strict(Schema):
    class Meta:
        unknown = RAISE


# Free text is shown to clinicians and exported: no control characters (NUL, ESC, DEL, C1 ...). Longer
# notes may hold line breaks and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _no_control(pattern: re.Pattern[str], allowed: str) -> validate.Validator:
    def check(value: str) -> None:
        found = pattern.search(value)
        if found:
            where = f"U+{ord(found.group()):04X} at {found.start()}"
            raise ValidationError(f"must not contain control characters ({where}){allowed}")

    return check


def _text(max_len: int = 100) -> fields.String:
    multiline = max_len >= 500
    pattern, allowed = (
        (_CONTROL_BUT_LINES, "; line breaks and tabs are allowed") if multiline else (_CONTROL, "")
    )
    return fields.String(
        load_default=None,
        allow_none=True,
        validate=[validate.Length(1, max_len), _no_control(pattern, allowed)],
    )


# Plausible ranges, wide enough for any real assay, narrow enough that every accepted result can be
# scored: a qPCR reaction holds at most ~10^7 copies of anything, control copies below one are not a
# measurement, IS% above a few hundred is unseen (10,000 is the sky), and laboratories' IS conversion
# factors lie between about 0.1 and 10.
MAX_COPIES = 1e9
MIN_CONTROL_COPIES = 1
MAX_IS_PERCENT = 1e4
# Below these a detected value is no assay's (a thousandth of a copy; IS% a thousand times below MR5):
# 0 is undetectable, and a subnormal such as 1e-320 is a unit or parsing error, not a measurement.
MIN_DETECTED_COPIES = 1e-3
MIN_DETECTED_IS_PERCENT = 1e-6
CONVERSION_FACTOR_RANGE = (1e-3, 1e3)
MAX_DOSE_MG = 10_000
RANGE_MAX = {"bcr_abl1_copies": MAX_COPIES, "is_percent": MAX_IS_PERCENT}


class AssayResultSchema(_Strict):
    result_id = fields.String(required=True, validate=_ID)
    patient_id = fields.String(required=True, validate=_ID)
    collected_at = CollectedAt(required=True)
    control_gene = fields.String(load_default=None, validate=validate.OneOf(CONTROL_GENES))
    control_copies = Number(load_default=None, allow_none=True, validate=validate.Range(max=MAX_COPIES))
    bcr_abl1_copies = Number(load_default=None, allow_none=True, validate=validate.Range(0, MAX_COPIES))
    is_percent = Number(load_default=None, allow_none=True, validate=validate.Range(0, MAX_IS_PERCENT))
    conversion_factor = Number(load_default=1.0, validate=validate.Range(*CONVERSION_FACTOR_RANGE))
    # Undetectable below the lab's stated limit, sent without control copies (HL7 OBX-5 `<^0.0032`, FHIR
    # comparator `<`): scored never MR4 or deeper (shared/clinical/response.py, _classify_below_limit).
    # No load_default, and dropped when null: results stored before it existed hash as they did.
    is_percent_below = Number(
        allow_none=True, validate=validate.Range(MIN_DETECTED_IS_PERCENT, MAX_IS_PERCENT)
    )
    status = fields.String(load_default="final", validate=validate.OneOf(RESULT_STATUSES))
    lab = _text()
    assay = _text()
    transcript = _text(40)

    @validates_schema
    def _measurement(self, data: dict, **kwargs: Any) -> None:
        # A withdrawal (entered-in-error) need not repeat the measurement it withdraws.
        if data.get("status") == "entered-in-error":
            return
        errors: dict[str, list[str]] = {}
        if data.get("is_percent_below") is not None:
            _below_limit_alone(data, errors)
            if errors:
                raise ValidationError(errors)
            return
        if data.get("control_gene") is None:
            errors["control_gene"] = ["is required"]
        copies = data.get("control_copies")
        if copies is None:
            errors["control_copies"] = ["is required"]
        elif copies <= 0:
            errors["control_copies"] = ["must be greater than 0: a result needs control-gene copies"]
        elif copies < MIN_CONTROL_COPIES:
            errors["control_copies"] = ["must be at least 1: fewer control-gene copies is not a measurement"]
        given = [f for f in ("bcr_abl1_copies", "is_percent") if data.get(f) is not None]
        if len(given) != 1:
            msg = "exactly one of bcr_abl1_copies and is_percent is required"
            errors["bcr_abl1_copies" if not given else given[1]] = [msg]
        for name, least, unit in (
            ("bcr_abl1_copies", MIN_DETECTED_COPIES, "copies"),
            ("is_percent", MIN_DETECTED_IS_PERCENT, "% IS"),
        ):
            value = data.get(name)
            if value is not None and 0 < value < least and name not in errors:
                errors[name] = [f"must be 0 (undetectable) or from {least:g} to {RANGE_MAX[name]:g} {unit}"]
        bcr, cf = data.get("bcr_abl1_copies"), data.get("conversion_factor", 1.0)
        if bcr and copies and copies >= MIN_CONTROL_COPIES and "bcr_abl1_copies" not in errors:
            computed = bcr / copies * 100 * cf
            if computed > MAX_IS_PERCENT:
                errors["bcr_abl1_copies"] = [
                    f"gives IS% {computed:.4g} (bcr_abl1_copies / control_copies x 100 x conversion_factor), "
                    f"above {MAX_IS_PERCENT:g}: the IS% of a result must be from 0 to {MAX_IS_PERCENT:g}"
                ]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _absent_below(self, data: dict, **kwargs: Any) -> dict:
        if data.get("is_percent_below", 0) is None:
            del data["is_percent_below"]
        return data


# --- the fast path for results -------------------------------------------------------------------
#
# Marshmallow builds and walks its field machinery for every item: ~70 us a result, most of a batch
# write's time (bench/write_path.py). The common shape (a plain date, numbers or nulls, known codes,
# short text) is checked here directly, producing the very document AssayResultSchema would; anything
# else (an error, a date-time, is_percent_below, a field of an unexpected type) makes the caller run
# the schema on the whole batch, so every refusal still carries marshmallow's messages.

_RESULT_FIELDS = tuple(AssayResultSchema._declared_fields)
_RESULT_KEYS = frozenset(_RESULT_FIELDS)
_ID_FULL = re.compile(ID_PATTERN.removesuffix("$") + r"\Z")
_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_NUMBER_MAX = {"control_copies": MAX_COPIES, "bcr_abl1_copies": MAX_COPIES, "is_percent": MAX_IS_PERCENT}
_TEXT_MAX = {"lab": 100, "assay": 100, "transcript": 40}
_measurement_rule = AssayResultSchema._measurement


def _fast_number(value: Any, least: float | None, most: float) -> float | None:
    """The canonical float of an in-range JSON number, or None for anything the schema must judge."""
    if type(value) is not float and type(value) is not int:
        return None
    if not math.isfinite(value) or value > most or (least is not None and value < least):
        return None
    return float(value) + 0.0


def fast_load_result(item: Any, earliest: str, latest: str) -> dict | None:
    """AssayResultSchema().load(item) for the common shape, or None when the schema must decide
    (``earliest``/``latest``: the allowed dates as ISO strings, computed once per batch)."""
    if type(item) is not dict or not item.keys() <= _RESULT_KEYS:
        return None
    rid, pid, collected = item.get("result_id"), item.get("patient_id"), item.get("collected_at")
    if type(rid) is not str or type(pid) is not str or type(collected) is not str:
        return None
    if not (_ID_FULL.match(rid) and _ID_FULL.match(pid) and _PLAIN_DATE.match(collected)):
        return None
    if not earliest <= collected <= latest:  # same-length ISO dates order as the dates do
        return None
    try:
        date.fromisoformat(collected)
    except ValueError:
        return None
    gene = item.get("control_gene")
    if gene is not None and gene not in CONTROL_GENES:
        return None
    out: dict[str, Any] = {
        "result_id": rid,
        "patient_id": pid,
        "collected_at": collected,
        "control_gene": gene,
    }
    for name in ("control_copies", "bcr_abl1_copies", "is_percent"):
        value = item.get(name)
        if value is not None:
            value = _fast_number(value, None if name == "control_copies" else 0, _NUMBER_MAX[name])
            if value is None:
                return None
        out[name] = value
    cf = item.get("conversion_factor", 1.0)
    cf = _fast_number(cf, CONVERSION_FACTOR_RANGE[0], CONVERSION_FACTOR_RANGE[1])
    if cf is None:
        return None
    out["conversion_factor"] = cf
    if item.get("is_percent_below") is not None:
        return None
    status = item.get("status", "final")
    if status not in RESULT_STATUSES:  # also None: the schema refuses it
        return None
    out["status"] = status
    for name, most in _TEXT_MAX.items():
        text = item.get(name)
        if text is not None and (
            type(text) is not str or not 1 <= len(text) <= most or _CONTROL.search(text)
        ):
            return None
        out[name] = text
    try:
        _measurement_rule(None, out)  # type: ignore[arg-type]
    except ValidationError:
        return None
    return out


def fast_load_results(items: list) -> list[dict] | None:
    """Every item through fast_load_result, or None if any needs the schema."""
    earliest, latest = EARLIEST_DATE.isoformat(), _latest_allowed().isoformat()
    loaded = []
    for item in items:
        doc = fast_load_result(item, earliest, latest)
        if doc is None:
            return None
        loaded.append(doc)
    return loaded


def _below_limit_alone(data: dict, errors: dict[str, list[str]]) -> None:
    """`is_percent_below` is a result without control copies; with them, the copies set the sensitivity
    (Cross 2015), so the result is sent as `bcr_abl1_copies: 0` instead."""
    for name in ("control_copies", "bcr_abl1_copies", "is_percent"):
        if data.get(name) is not None:
            errors[name] = [
                "must be absent with is_percent_below; with control copies send bcr_abl1_copies 0"
                if name == "control_copies"
                else "must be absent with is_percent_below (an undetectable result below a limit)"
            ]


def _known_tki(value: str) -> None:
    # An unknown name is refused rather than guessed: it would silently change the TFR duration and the
    # count of lines (shared/clinical/drugs.py).
    if resolve_tki(value) is None:
        raise ValidationError(f"unknown TKI {value.strip()!r}; accepted: {accepted_names()}")


def _tki_field() -> fields.String:
    return fields.String(load_default=None, allow_none=True, validate=[_NAME, _known_tki])


def _normalise_tki(data: dict) -> None:
    """`tki` becomes the drug's generic name (ELN 2020: brand or generic, one drug); the name as written,
    when it is a brand or a generic product, is kept as `tki_product`."""
    written = data.get("tki")
    if written is not None:
        drug = resolve_tki(written)
        data["tki"] = drug.generic
        product = data.get("tki_product") or written.strip()
        data["tki_product"] = None if product.lower() == drug.generic else product
    if data.get("tki_product") is None:
        data.pop("tki_product", None)  # absent, not null: a repost of an old registration is unchanged


def _check_product(data: dict) -> None:
    product, tki = data.get("tki_product"), data.get("tki")
    if product is None:
        return
    if tki is None:
        raise ValidationError("needs tki: the drug this product is", "tki_product")
    if resolve_tki(product) is not resolve_tki(tki):
        raise ValidationError(f"names another drug than tki {tki!r}", "tki_product")


class PatientSchema(_Strict):
    cohorts = fields.List(
        fields.String(validate=[_ID, not_reserved_cohort_id]),
        load_default=list,
        validate=validate.Length(max=50),
    )
    enrolled_on = ClinicalDate(load_default=None, allow_none=True)
    tki = _tki_field()
    tki_product = fields.String(load_default=None, allow_none=True, validate=[_NAME, _known_tki])
    tki_started_on = ClinicalDate(load_default=None, allow_none=True)
    dose_mg = Number(
        load_default=None, allow_none=True, validate=validate.Range(0, MAX_DOSE_MG, min_inclusive=False)
    )

    @validates_schema
    def _product(self, data: dict, **kwargs: Any) -> None:
        _check_product(data)

    @post_load
    def _normalise(self, data: dict, **kwargs: Any) -> dict:
        data["cohorts"] = sorted(set(data["cohorts"]))
        _normalise_tki(data)
        return data


class ReasonCode(fields.String):
    """A coded reason for a change of therapy (clinical-rules.md s.8), any case; free text goes beside."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        code = "_".join(text.strip().lower().replace("-", " ").split())
        if code not in REASON_CODES:
            raise ValidationError(f"must be one of {', '.join(REASON_CODES)}; put free text in reason_text")
        return code


# Fields that belong to one event type only: given with another, they are refused (not silently kept).
_FIELDS_OF_TYPE = {"mutation": "resistance_mutation", "karyotype": "high_risk_aca", "phase": "progression"}
_REQUIRED_OF_TYPE = {"resistance_mutation": "mutation", "high_risk_aca": "karyotype"}


class EventSchema(_Strict):
    event_id = fields.String(load_default=None, validate=_ID)
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    date = ClinicalDate(required=True)
    tki = _tki_field()
    tki_product = fields.String(load_default=None, allow_none=True, validate=[_NAME, _known_tki])
    dose_mg = Number(
        load_default=None, allow_none=True, validate=validate.Range(0, MAX_DOSE_MG, min_inclusive=False)
    )
    reason = ReasonCode(load_default=None, allow_none=True)
    reason_text = _text(500)
    # ELN 2020 failures no assay shows (clinical-rules.md s.9): the mutation (e.g. T315I), the
    # karyotype (ISCN text), the phase of a progression.
    mutation = _text(100)
    karyotype = _text(500)
    phase = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(PROGRESSION_PHASES))
    note = _text(500)

    @validates_schema
    def _per_type(self, data: dict, **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name, owner in _FIELDS_OF_TYPE.items():
            if data.get(name) is not None and data.get("type") != owner:
                errors[name] = [f"only for events of type {owner}"]
        required = _REQUIRED_OF_TYPE.get(data.get("type", ""))
        if required and not (data.get(required) or "").strip():
            errors[required] = [f"is required for {data['type']}"]
        if errors:
            raise ValidationError(errors)
        _check_product(data)

    @post_load
    def _drop_empty(self, data: dict, **kwargs: Any) -> dict:
        _normalise_tki(data)
        # Absent optional fields are not stored, so a repost with or without nulls is identical.
        return {k: v for k, v in data.items() if v is not None}


class CohortSchema(_Strict):
    """A cohort definition (README.md, "Cohort statistics"); absent fields take the defaults."""

    endpoint = fields.String(
        load_default=DEFAULT_DEFINITION["endpoint"], validate=validate.OneOf(ENDPOINT_LEVELS)
    )
    competing_events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        load_default=lambda: list(DEFAULT_DEFINITION["competing_events"]),
    )
    censoring_events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        load_default=lambda: list(DEFAULT_DEFINITION["censoring_events"]),
    )
    data_cutoff = ClinicalDate(load_default=None, allow_none=True)
    description = _text(500)

    @validates_schema
    def _disjoint(self, data: dict, **kwargs: Any) -> None:
        both = set(data.get("competing_events", [])) & set(data.get("censoring_events", []))
        if both:
            raise ValidationError(
                f"{', '.join(sorted(both))} cannot both compete and censor", "censoring_events"
            )

    @post_load
    def _normalise(self, data: dict, **kwargs: Any) -> dict:
        data["competing_events"] = sorted(set(data["competing_events"]))
        data["censoring_events"] = sorted(set(data["censoring_events"]))
        return data


def duplicate_ids(items: list[dict], field: str) -> dict[int, dict[str, list[str]]]:
    """Errors for items repeating an id already used earlier in the same batch."""
    seen: dict[Any, int] = {}
    errors: dict[int, dict[str, list[str]]] = {}
    for i, item in enumerate(items):
        value = item.get(field) if isinstance(item, dict) else None
        if not isinstance(value, str):
            continue
        if value in seen:
            errors[i] = {field: [f"repeats item {seen[value]} of this batch"]}
        else:
            seen[value] = i
    return errors


__all__ = [
    "EXCLUDE",
    "AssayResultSchema",
    "CohortSchema",
    "EventSchema",
    "PatientSchema",
    "ValidationError",
    "duplicate_ids",
]
