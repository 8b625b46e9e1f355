"""Scored results: one stored result dict plus its Cross 2015 classification, in a deterministic order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from functools import lru_cache
from typing import Any

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

    def sort_key(self) -> tuple:
        return collection_order(self.collected_at, self.result_id)


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
    collected_at = raw["collected_at"]
    return ScoredResult(
        result_id=str(raw["result_id"]),
        collected_at=str(collected_at),
        collected_on=parse_date(collected_at),
        classification=classification,
        transcript=raw.get("transcript"),
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
    exact = result.classification.is_percent_exact
    return exact is not None and exact > bound


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
