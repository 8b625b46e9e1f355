"""Score one BCR-ABL1 result: IS%, molecular response level, sensitivity and sample adequacy.

Sources (see /work/shared/clinical-rules.md section 1):
- Cross NCP et al., "Laboratory recommendations for scoring deep molecular responses following treatment for
  chronic myeloid leukemia", Leukemia 2015;29:999-1003 ("Cross 2015").
- Hochhaus A et al., "European LeukemiaNet 2020 recommendations for treating chronic myeloid leukemia",
  Leukemia 2020;34:966-984 ("ELN 2020"), which adopts the Cross 2015 definitions.

All threshold comparisons use exact rational arithmetic (`fractions.Fraction`): every numeric input is
converted through its shortest decimal representation, so a result written as 3.2 copies in 100,000 ABL1 is
exactly 0.0032% and scores MR4.5, as clinical-rules.md section 1 requires ("never with a raw float <=").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from numbers import Rational
from typing import Any

# Response levels from shallowest to deepest (Cross 2015; ELN 2020). MMR is MR3.
LEVELS: tuple[str, ...] = ("NONE", "MR1", "MR2", "MMR", "MR4", "MR4.5", "MR5")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}

# IS% upper bounds per level, each inclusive, deepest first (Cross 2015 table; clinical-rules.md s.1).
# 0.0032 is Cross 2015's rounded 10^-4.5 x 100, used as written.
IS_LEVEL_THRESHOLDS: tuple[tuple[str, Fraction], ...] = (
    ("MR5", Fraction("0.001")),
    ("MR4.5", Fraction("0.0032")),
    ("MR4", Fraction("0.01")),
    ("MMR", Fraction("0.1")),
    ("MR2", Fraction(1)),
    ("MR1", Fraction(10)),
)

# Undetectable BCR-ABL1 is scored by the control-gene copies in the same cDNA volume, deepest band first
# (Cross 2015 table; clinical-rules.md s.1). Cross 2015 gives no bands for BCR as control gene.
UNDETECTABLE_BANDS: dict[str, tuple[tuple[str, int], ...]] = {
    "ABL1": (("MR5", 100_000), ("MR4.5", 32_000), ("MR4", 10_000)),
    "GUSB": (("MR5", 240_000), ("MR4.5", 77_000), ("MR4", 24_000)),
    "BCR": (),
}

# Cross 2015: at least 10,000 ABL1 (24,000 GUSB) copies are needed to assess MR4 or deeper; no BCR figure.
ADEQUATE_CONTROL_COPIES: dict[str, int] = {"ABL1": 10_000, "GUSB": 24_000}

CONTROL_GENES: tuple[str, ...] = ("ABL1", "GUSB", "BCR")

# Shallowest level that can be claimed without MR4-grade sensitivity (Cross 2015: a sample below the MR4 band
# or adequacy figure cannot show MR4 or deeper).
CAP_WITHOUT_DEEP_SENSITIVITY = "MMR"

MMR_THRESHOLD = dict(IS_LEVEL_THRESHOLDS)["MMR"]
MR4_5_THRESHOLD = dict(IS_LEVEL_THRESHOLDS)["MR4.5"]


def level_rank(level: str) -> int:
    """Rank of a level, 0 for NONE up to 6 for MR5; raises ValueError for an unknown name."""
    try:
        return _RANK[level]
    except KeyError:
        raise ValueError(f"unknown response level {level!r}; expected one of {LEVELS}") from None


def at_least(level: str, target: str) -> bool:
    """True when `level` is `target` or deeper (e.g. at_least("MR4", "MMR") is True)."""
    return level_rank(level) >= level_rank(target)


def to_exact(value: Any) -> Fraction:
    """Exact rational value of a number as written: floats via their shortest repr, so 0.0032 -> 32/10000."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, Rational):  # int and Fraction are already exact
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, (Decimal, str)):
        exact = Decimal(value)
        if not exact.is_finite():
            raise ValueError(f"expected a finite number, got {value!r}")
        return Fraction(exact)
    raise ValueError(f"expected a number, got {value!r}")


def level_for_is(is_percent: Fraction) -> str:
    """Level of a detectable IS% (bounds inclusive, Cross 2015 table)."""
    for level, bound in IS_LEVEL_THRESHOLDS:
        if is_percent <= bound:
            return level
    return "NONE"


def cap_level(level: str, cap: str) -> str:
    """The shallower of `level` and `cap`."""
    return cap if level_rank(level) > level_rank(cap) else level


def mr_log_reduction(is_percent: Fraction) -> float:
    """MR value = 2 - log10(IS%), computed from numerator and denominator so big integers stay exact."""
    return 2 - (math.log10(is_percent.numerator) - math.log10(is_percent.denominator))


def format_percent(value: Fraction) -> str:
    """Human-readable IS% with up to 10 significant digits and no exponent (0.00001, not 1e-05)."""
    text = format(Decimal(f"{float(value):.10g}"), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_copies(value: Fraction) -> str:
    if value.denominator == 1:
        return f"{value.numerator:,}"
    return f"{float(value):,.2f}"


@dataclass(frozen=True)
class Classification:
    """One scored result. `to_dict()` gives the JSON-ready view; the *_exact fields are for other rules."""

    level: str
    is_percent: float | None
    mr_value: float
    mr_value_is_lower_bound: bool
    detectable: bool
    sensitivity_percent: float
    adequate: bool | None
    deep_response_evaluable: bool
    reason: str
    upper_is_percent: float
    control_gene: str | None
    # The level is what the sample's sensitivity can show, not a measurement: the true response may be
    # deeper. Such a result can show an improvement, never a worsening (see scored.level_setting).
    sensitivity_limited: bool
    # Exact values that threshold rules compare (milestones, loss of MMR, ACTIM); not exported.
    is_percent_exact: Fraction | None = field(default=None, repr=False)
    upper_is_percent_exact: Fraction = field(default=Fraction(0), repr=False)
    sensitivity_exact: Fraction = field(default=Fraction(0), repr=False)
    # False for an undetectable result sent as "below the lab's limit" without control-gene copies: its
    # sensitivity is the lab's stated limit, not one the service could compute (see classify_result).
    sensitivity_known: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "is_percent": self.is_percent,
            "mr_value": self.mr_value,
            "mr_value_is_lower_bound": self.mr_value_is_lower_bound,
            "detectable": self.detectable,
            "sensitivity_percent": self.sensitivity_percent,
            "adequate": self.adequate,
            "deep_response_evaluable": self.deep_response_evaluable,
            "reason": self.reason,
            "upper_is_percent": self.upper_is_percent,
            "control_gene": self.control_gene,
            "sensitivity_limited": self.sensitivity_limited,
            "sensitivity_known": self.sensitivity_known,
        }


def classify_result(
    *,
    control_gene: str | None,
    control_copies: float | None,
    bcr_abl1_copies: float | None = None,
    is_percent: float | None = None,
    conversion_factor: float = 1.0,
    is_percent_below: float | None = None,
) -> Classification:
    """Score one result (Cross 2015 as adopted by ELN 2020; clinical-rules.md section 1).

    Give exactly one of `bcr_abl1_copies` and `is_percent` with the control gene and its copies: the copies
    set the sensitivity (1 / control copies x 100 x CF, as IS%) and the sample adequacy. Or, for a result
    the laboratory reports only as undetectable below a limit (HL7 ``<^0.0032``, FHIR comparator ``<``)
    without control copies, give `is_percent_below` alone: see `_classify_below_limit`.
    """
    if is_percent_below is not None:
        if control_copies is not None or bcr_abl1_copies is not None or is_percent is not None:
            raise ValueError("is_percent_below stands alone: with control copies, send bcr_abl1_copies 0")
        return _classify_below_limit(control_gene, _positive(is_percent_below, "is_percent_below"))
    if control_gene not in CONTROL_GENES:
        raise ValueError(f"control_gene must be one of {CONTROL_GENES}, got {control_gene!r}")
    if control_copies is None:
        raise ValueError("control_copies is required (or is_percent_below alone)")
    if (bcr_abl1_copies is None) == (is_percent is None):
        raise ValueError("give exactly one of bcr_abl1_copies and is_percent")
    control = _positive(control_copies, "control_copies")
    cf = _positive(conversion_factor, "conversion_factor")
    if bcr_abl1_copies is not None:
        is_exact = _non_negative(bcr_abl1_copies, "bcr_abl1_copies") / control * 100 * cf
    else:
        is_exact = _non_negative(is_percent, "is_percent")
    sensitivity = 100 * cf / control
    if is_exact == 0:
        return _classify_undetectable(control_gene, control, sensitivity)
    return _classify_detectable(control_gene, control, is_exact, sensitivity)


def _classify_below_limit(control_gene: str | None, limit: Fraction) -> Classification:
    """Undetectable below a limit the laboratory states, without control-gene copies.

    Cross 2015 scores an undetectable result by the control copies in the same cDNA volume; without them the
    sample's sensitivity is unknown, so it can never show MR4 or deeper (clinical-rules.md s.1: "An
    undetectable result below the MR4 band cannot be scored MR4 or deeper"). What it does show is IS% below
    the stated limit: scored as the level of that limit, capped at MMR, exactly as an undetectable result of
    insufficient sensitivity is.
    """
    level = cap_level(level_for_is(limit), CAP_WITHOUT_DEEP_SENSITIVITY)
    reason = (
        f"undetectable below IS {format_percent(limit)}% as the laboratory reported it, without control-gene"
        f" copies: sensitivity unknown, so never MR4 or deeper (Cross 2015); scored {level} at best"
    )
    return Classification(
        level=level,
        is_percent=None,
        mr_value=mr_log_reduction(limit),
        mr_value_is_lower_bound=True,
        detectable=False,
        sensitivity_percent=float(limit),
        adequate=None,
        deep_response_evaluable=False,
        reason=reason,
        sensitivity_limited=True,
        upper_is_percent=float(limit),
        control_gene=control_gene,
        is_percent_exact=None,
        upper_is_percent_exact=limit,
        sensitivity_exact=limit,
        sensitivity_known=False,
    )


def _positive(value: Any, name: str) -> Fraction:
    exact = to_exact(value)
    if exact <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return exact


def _non_negative(value: Any, name: str) -> Fraction:
    exact = to_exact(value)
    if exact < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return exact


def _adequacy(control_gene: str, control: Fraction) -> bool | None:
    # Cross 2015 gives no adequacy figure for BCR, so adequacy is unknown rather than guessed.
    minimum = ADEQUATE_CONTROL_COPIES.get(control_gene)
    return None if minimum is None else control >= minimum


def _classify_detectable(
    control_gene: str, control: Fraction, is_exact: Fraction, sensitivity: Fraction
) -> Classification:
    adequate = _adequacy(control_gene, control)
    by_is = level_for_is(is_exact)
    level = by_is
    pct = format_percent(is_exact)
    if adequate is False and at_least(by_is, "MR4"):
        # Cross 2015: a sample below 10,000 ABL1 / 24,000 GUSB cannot assess MR4 or deeper.
        level = CAP_WITHOUT_DEEP_SENSITIVITY
        minimum = ADEQUATE_CONTROL_COPIES[control_gene]
        reason = (
            f"detectable at IS {pct}% (in the {by_is} range), but {control_gene} {format_copies(control)}"
            f" copies is below the {minimum:,} needed to assess MR4 or deeper (Cross 2015):"
            f" scored {level} at best"
        )
    else:
        reason = f"detectable at IS {pct}%: {level} (Cross 2015 IS% table, bounds inclusive)"
        if adequate is False:
            reason += (
                f"; sample of limited sensitivity: {control_gene} {format_copies(control)} copies is below"
                f" the {ADEQUATE_CONTROL_COPIES[control_gene]:,} Cross 2015 recommends"
            )
        elif adequate is None:
            reason += "; adequacy not assessed: Cross 2015 gives no minimum for BCR as control gene"
    return Classification(
        level=level,
        is_percent=float(is_exact),
        mr_value=mr_log_reduction(is_exact),
        mr_value_is_lower_bound=False,
        detectable=True,
        sensitivity_percent=float(sensitivity),
        adequate=adequate,
        # A detectable result can score a deep level unless inadequacy caps it (BCR: scored by IS% alone).
        deep_response_evaluable=adequate is not False,
        reason=reason,
        # Capped at MMR by an inadequate sample: the measured IS% is in the MR4-or-deeper range.
        sensitivity_limited=level != by_is,
        upper_is_percent=float(is_exact),
        control_gene=control_gene,
        is_percent_exact=is_exact,
        upper_is_percent_exact=is_exact,
        sensitivity_exact=sensitivity,
    )


def _classify_undetectable(control_gene: str, control: Fraction, sensitivity: Fraction) -> Classification:
    adequate = _adequacy(control_gene, control)
    band_level = _band_level(control_gene, control, sensitivity)
    if band_level is not None:
        level = band_level
        reason = (
            f"undetectable with {control_gene} {format_copies(control)} copies: {level}"
            f" (Cross 2015 undetectable bands; sensitivity IS {format_percent(sensitivity)}%)"
        )
    elif _band_level(control_gene, control, None) is not None:
        # In a band by its copies, but a conversion factor above 1 leaves its sensitivity short of it.
        level = cap_level(level_for_is(sensitivity), CAP_WITHOUT_DEEP_SENSITIVITY)
        reason = (
            f"undetectable with {control_gene} {format_copies(control)} copies, but the conversion factor"
            f" makes its sensitivity IS {format_percent(sensitivity)}%, too poor for MR4: {level} at best"
            " (a level never claims more than the sensitivity shows)"
        )
    else:
        # Cross 2015: undetectable below the MR4 band is never MR4 or deeper; it shows what its sensitivity
        # shows, i.e. IS <= sensitivity, which is scored at most MMR.
        level = cap_level(level_for_is(sensitivity), CAP_WITHOUT_DEEP_SENSITIVITY)
        reason = _insufficient_reason(control_gene, control, sensitivity, level)
    return Classification(
        level=level,
        is_percent=None,
        mr_value=mr_log_reduction(sensitivity),
        mr_value_is_lower_bound=True,
        detectable=False,
        sensitivity_percent=float(sensitivity),
        adequate=adequate,
        deep_response_evaluable=band_level is not None,
        reason=reason,
        sensitivity_limited=band_level is None,
        upper_is_percent=float(sensitivity),
        control_gene=control_gene,
        is_percent_exact=None,
        upper_is_percent_exact=sensitivity,
        sensitivity_exact=sensitivity,
    )


def _band_level(control_gene: str, control: Fraction, sensitivity: Fraction | None) -> str | None:
    """The Cross 2015 band of an undetectable result, capped by what its sensitivity shows.

    The copy bands are written for a conversion factor of about 1. With a larger factor the sensitivity
    (100 x CF / copies) may not reach the band's level: 10,000 ABL1 at CF 2 shows only IS <= 0.02%, not
    MR4's 0.01%. The digest is silent on this; a level never claims more than its sensitivity shows. At
    CF 1 the cap changes nothing (32,000 ABL1 is IS <= 0.003125%, MR4.5; 24,000 GUSB is 0.0042%, MR4).
    Without `sensitivity`, the band by copies alone.
    """
    for level, minimum in UNDETECTABLE_BANDS[control_gene]:
        if control >= minimum:
            if sensitivity is None:
                return level
            capped = cap_level(level, level_for_is(sensitivity))
            return capped if at_least(capped, "MR4") else None
    return None


def _insufficient_reason(control_gene: str, control: Fraction, sensitivity: Fraction, level: str) -> str:
    shows = f"shows IS <= {format_percent(sensitivity)}%, scored {level} at best"
    if control_gene == "BCR":
        return (
            f"undetectable with BCR as control gene ({format_copies(control)} copies): cannot be scored for"
            f" deep response, Cross 2015 gives no BCR bands; {shows}"
        )
    needed = UNDETECTABLE_BANDS[control_gene][-1][1]
    return (
        f"undetectable; {control_gene} {format_copies(control)} copies is below the {needed:,} needed to"
        f" score MR4 (Cross 2015), insufficient sensitivity for MR4: {shows}"
    )
