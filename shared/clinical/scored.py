"""Scored results: one stored result dict plus its Cross 2015 classification, in a deterministic order."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from functools import lru_cache
from typing import Any

import orjson

from shared.clinical.response import Classification, classify_result, level_rank
from shared.clinical.timeline import collection_order, parse_date

# Results with this status stay stored for audit but are excluded from every computation.
WITHDRAWN_STATUS = "entered-in-error"


@dataclass(frozen=True)
class ScoredResult:
    result_id: str
    collected_at: str
    collected_on: date
    classification: Classification
    transcript: str | None = None
    # collection_order(collected_at, result_id), computed once (a recompute sorts the whole history).
    order: tuple = field(default=(), compare=False, repr=False)

    def sort_key(self) -> tuple:
        return self.order or collection_order(self.collected_at, self.result_id)


def score_result(raw: Mapping[str, Any]) -> ScoredResult:
    """Classify one stored result dict (the API has already validated its fields)."""
    cf = raw.get("conversion_factor")
    classification = _classify(
        raw.get("control_gene"),
        raw.get("control_copies"),
        raw.get("bcr_abl1_copies"),
        raw.get("is_percent"),
        1 if cf is None else cf,
        raw.get("is_percent_below"),
    )
    collected_at = str(raw["collected_at"])
    result_id = str(raw["result_id"])
    return ScoredResult(
        result_id=result_id,
        collected_at=collected_at,
        collected_on=parse_date(collected_at),
        classification=classification,
        transcript=raw.get("transcript"),
        order=collection_order(collected_at, result_id),
    )


@lru_cache(maxsize=65_536)
def _classify(
    control_gene: str | None,
    control_copies: float | None,
    bcr_abl1_copies: float | None,
    is_percent: float | None,
    conversion_factor: float,
    is_percent_below: float | None,
) -> Classification:
    # A classification is a pure function of the measurement (and immutable): a recompute, which scores
    # the whole history for the status, the timeline and the cohort record, scores each value once.
    return classify_result(
        control_gene=control_gene,
        control_copies=control_copies,
        bcr_abl1_copies=bcr_abl1_copies,
        is_percent=is_percent,
        conversion_factor=conversion_factor,
        is_percent_below=is_percent_below,
    )


def score_results(raw_results: Iterable[Mapping[str, Any]]) -> tuple[list[ScoredResult], int]:
    """(included results sorted by (collected_at, result_id), count of entered-in-error results)."""
    included: list[ScoredResult] = []
    withdrawn = 0
    for raw in raw_results:
        if raw.get("status") == WITHDRAWN_STATUS:
            withdrawn += 1
            continue
        included.append(score_result(raw))
    included.sort(key=ScoredResult.sort_key)
    return included, withdrawn


def measured_above(result: ScoredResult, bound: Fraction) -> bool:
    """Whether a result shows IS% above `bound`: a warning, a failure or a loss needs a measured IS%
    above the bound, and an undetectable result never shows one (whatever its sensitivity)."""
    c = result.classification
    exact = c.is_percent_exact
    if exact is None:
        return False
    # The float IS% is within 1e-15 (relative) of the exact value: far from the bound it decides alone
    # (a Fraction comparison costs ~50 times more); near it, the exact comparison decides.
    approx, limit = c.is_percent, bound.numerator / bound.denominator
    if approx is not None and limit > 0:
        if approx > limit * _ABOVE:
            return True
        if approx < limit * _BELOW:
            return False
    return exact > bound


_ABOVE, _BELOW = 1 + 1e-9, 1 - 1e-9


# --- stored results, scored once per content ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored result as a recompute needs it: its id, its place in collection order, and its score
    (None: entered in error, excluded from every computation, listed withdrawn in the timeline)."""

    result_id: str
    order: tuple
    scored: ScoredResult | None
    # The classification's values in Classification.to_dict()'s order (what the timeline stores).
    values: tuple | None = None
    # What other modules derive from the entry once (shared.timelines: its stored row).
    memo: dict = field(default_factory=dict, compare=False, repr=False)


# A result's classification is a pure function of its stored content (the bytes the store keeps, a
# canonical encoding): a worker parses and scores each content once, and a recompute folds the scores.
# Bounded (least recently used out): the working set of a burst of 100,000 results fits.
SCORED_CACHE_SIZE = 131_072
_SCORED: OrderedDict[bytes, StoredEntry] = OrderedDict()


def stored_entry(raw: bytes, decode: Callable[[bytes], Mapping[str, Any]] = orjson.loads) -> StoredEntry:
    """The scored entry of one stored result's bytes (decoded by ``decode`` and scored on the first
    sight of them). The bytes must determine the result id, date and measurement (the store's do)."""
    entry = _SCORED.get(raw)
    if entry is not None:
        _SCORED.move_to_end(raw)
        return entry
    doc = decode(raw)
    if doc.get("status") == WITHDRAWN_STATUS:
        rid, at = str(doc["result_id"]), str(doc["collected_at"])
        entry = StoredEntry(rid, collection_order(at, rid), None)
    else:
        scored = score_result(doc)
        values = tuple(scored.classification.to_dict().values())
        entry = StoredEntry(scored.result_id, scored.order, scored, values)
    _SCORED[raw] = entry
    if len(_SCORED) > SCORED_CACHE_SIZE:
        _SCORED.popitem(last=False)
    return entry


def stored_entries(
    raws: Iterable[bytes], decode: Callable[[bytes], Mapping[str, Any]] = orjson.loads
) -> list[StoredEntry]:
    """Every stored result (withdrawn ones included) in collection order."""
    entries = [stored_entry(raw, decode) for raw in raws]
    entries.sort(key=_entry_order)
    return entries


def _entry_order(entry: StoredEntry) -> tuple:
    return entry.order


def included_results(entries: Sequence[StoredEntry]) -> tuple[list[ScoredResult], int]:
    """What score_results returns, from entries already in collection order."""
    scored = [e.scored for e in entries if e.scored is not None]
    return scored, len(entries) - len(scored)


def level_setting(scored: Sequence[ScoredResult]) -> list[ScoredResult]:
    """The results that set the patient's current level, in time order.

    A result scored by its measurement (or by a Cross 2015 undetectable band) always does. A
    sensitivity-limited one cannot assess MR4 or deeper (Cross 2015): undetectable in too few control
    copies (or with BCR as control) it proves only that IS% is at or below its sensitivity; detectable in
    an inadequate sample, capped at MMR, its measurement within the MR4 range is too imprecise to place
    among the deep levels. Either can show an improvement, never a worsening: it sets the level only where
    it shows a deeper one than the level before (a patient in MR4 is not "MMR now" because one sample was
    small, and a patient at 0.5% whose small sample shows IS <= 0.02% is back in MMR).
    """
    setting: list[ScoredResult] = []
    for result in scored:
        c = result.classification
        # With nothing before, a limited result must show at least MR1 (IS <= 20% shows no level).
        before = setting[-1].classification.level if setting else "NONE"
        if not c.sensitivity_limited or level_rank(c.level) > level_rank(before):
            setting.append(result)
    return setting
