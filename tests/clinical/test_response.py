"""Cross 2015 scoring (clinical-rules.md s.1): IS% levels, undetectable bands, adequacy, exact arithmetic.

The published tables are written out here independently of the code, so a wrong constant in the code fails.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest

from shared.clinical.response import (
    LEVELS,
    Classification,
    at_least,
    classify_result,
    level_rank,
)
from shared.schemas import CONVERSION_FACTOR_RANGE, MAX_COPIES, MAX_IS_PERCENT, MIN_CONTROL_COPIES

# Cross 2015 / ELN 2020 IS% table: level -> inclusive upper bound, deepest first.
PUBLISHED_IS = [
    ("MR5", "0.001"),
    ("MR4.5", "0.0032"),
    ("MR4", "0.01"),
    ("MMR", "0.1"),
    ("MR2", "1"),
    ("MR1", "10"),
]
SHALLOWER = {"MR5": "MR4.5", "MR4.5": "MR4", "MR4": "MMR", "MMR": "MR2", "MR2": "MR1", "MR1": "NONE"}
# Cross 2015 undetectable bands (control-gene copies).
PUBLISHED_BANDS = {
    "ABL1": [("MR5", 100_000), ("MR4.5", 32_000), ("MR4", 10_000)],
    "GUSB": [("MR5", 240_000), ("MR4.5", 77_000), ("MR4", 24_000)],
}
ADEQUATE = {"ABL1": 10_000, "GUSB": 24_000}
EPS = Decimal("0.0000001")


def _abl1(copies: float, control: float = 100_000, cf: float = 1.0) -> Classification:
    return classify_result(
        control_gene="ABL1", control_copies=control, bcr_abl1_copies=copies, conversion_factor=cf
    )


def _is(value: float, control_gene: str = "ABL1", control: float = 100_000) -> Classification:
    return classify_result(control_gene=control_gene, control_copies=control, is_percent=value)


# ---- ordering ----


def test_levels_ordered_shallowest_to_deepest() -> None:
    assert LEVELS == ("NONE", "MR1", "MR2", "MMR", "MR4", "MR4.5", "MR5")
    assert [level_rank(level) for level in LEVELS] == list(range(7))


@pytest.mark.parametrize(
    ("level", "target", "expected"),
    [
        ("MR4", "MMR", True),
        ("MMR", "MMR", True),
        ("MR2", "MMR", False),
        ("NONE", "MR1", False),
        ("MR5", "MR4.5", True),
    ],
)
def test_at_least(level: str, target: str, expected: bool) -> None:
    assert at_least(level, target) is expected


def test_unknown_level_rejected() -> None:
    with pytest.raises(ValueError):
        level_rank("CMR")


# ---- IS% table: at, just above, just below every bound (both input paths) ----


@pytest.mark.parametrize(("level", "bound"), PUBLISHED_IS)
def test_is_percent_at_bound_is_inclusive(level: str, bound: str) -> None:
    assert _is(float(bound)).level == level


@pytest.mark.parametrize(("level", "bound"), PUBLISHED_IS)
def test_is_percent_just_above_bound_is_shallower(level: str, bound: str) -> None:
    assert _is(float(Decimal(bound) + EPS)).level == SHALLOWER[level]


@pytest.mark.parametrize(("level", "bound"), PUBLISHED_IS)
def test_is_percent_just_below_bound_keeps_level(level: str, bound: str) -> None:
    assert _is(float(Decimal(bound) - EPS)).level == level


@pytest.mark.parametrize(("level", "bound"), PUBLISHED_IS)
def test_copies_at_and_around_bound(level: str, bound: str) -> None:
    # With 100,000 ABL1 copies, IS% = copies / 1000, so the bound is reached at bound * 1000 copies.
    at = Decimal(bound) * 1000
    assert _abl1(float(at)).level == level
    assert _abl1(float(at + EPS)).level == SHALLOWER[level]
    assert _abl1(float(at - EPS)).level == level


def test_none_above_ten_percent() -> None:
    assert _is(10.5).level == "NONE"
    assert _is(250.0).level == "NONE"


# ---- floating point care ----


def test_three_point_two_in_100000_abl1_is_exactly_mr4_5() -> None:
    c = _abl1(3.2)
    assert c.level == "MR4.5"
    assert c.is_percent_exact == Fraction("0.0032")


def test_just_above_three_point_two_scores_mr4() -> None:
    assert _abl1(3.2000001).level == "MR4"


def test_is_percent_0_0032_scores_mr4_5() -> None:
    assert _is(0.0032).level == "MR4.5"


@pytest.mark.parametrize(
    ("copies", "control", "cf", "level", "exact"),
    [
        # Each of these is exactly on a bound but a naive float product lands just above it.
        (2.24, 70_000, 1.0, "MR4.5", "0.0032"),
        (3.2, 110_000, 1.1, "MR4.5", "0.0032"),
        (12.5, 100_000, 0.8, "MR4", "0.01"),
        (10_000, 110_000, 1.1, "MR1", "10"),
    ],
)
def test_float_traps_on_bounds(copies: float, control: float, cf: float, level: str, exact: str) -> None:
    assert copies / control * 100 * cf > float(exact)  # the trap is real
    c = _abl1(copies, control, cf)
    assert c.is_percent_exact == Fraction(exact)
    assert c.level == level


@pytest.mark.parametrize(("cf", "level"), [(1.0, "MMR"), (0.8, "MMR"), (1.2, "MR2")])
def test_one_copy_in_1000_times_conversion_factor(cf: float, level: str) -> None:
    # 1 / 1,000 x 100 = 0.1% (MMR bound, inclusive); CF 0.8 -> 0.08% (MMR); CF 1.2 -> 0.12% (MR2).
    c = _abl1(1, 1_000, cf)
    assert c.is_percent_exact == Fraction(1, 1000) * 100 * Fraction(str(cf))
    assert c.level == level


def test_conversion_factor_crosses_mmr_downwards() -> None:
    # 125 in 100,000 is 0.125% (MR2) raw; with CF 0.8 exactly 0.1% (MMR).
    assert _abl1(125).level == "MR2"
    assert _abl1(125, cf=0.8).level == "MMR"


def test_conversion_factor_crosses_mr4_upwards() -> None:
    # 9 in 100,000 is 0.009% (MR4); CF 1.2 -> 0.0108% (MMR).
    assert _abl1(9).level == "MR4"
    assert _abl1(9, cf=1.2).level == "MMR"


def test_conversion_factor_does_not_apply_to_reported_is_percent() -> None:
    c = classify_result(control_gene="ABL1", control_copies=100_000, is_percent=0.0032, conversion_factor=1.2)
    assert c.level == "MR4.5"
    assert c.sensitivity_percent == pytest.approx(1 / 100_000 * 100 * 1.2)


# ---- derived values ----


def test_detectable_mr_value_and_upper() -> None:
    c = _abl1(50)  # 0.05%
    assert c.detectable is True
    assert c.is_percent == pytest.approx(0.05)
    assert c.upper_is_percent == c.is_percent
    assert c.mr_value == pytest.approx(2 - math.log10(0.05))
    assert c.mr_value_is_lower_bound is False


def test_sensitivity_follows_control_and_cf() -> None:
    c = _abl1(50, control=40_000, cf=0.9)
    assert c.sensitivity_percent == pytest.approx(1 / 40_000 * 100 * 0.9)


def test_to_dict_is_json_ready_and_hides_exact_fields() -> None:
    d = _abl1(3.2).to_dict()
    assert "is_percent_exact" not in d and "upper_is_percent_exact" not in d
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in d.values())
    assert d["level"] == "MR4.5"


def test_classification_is_frozen() -> None:
    c = _abl1(3.2)
    with pytest.raises(AttributeError):
        c.level = "MR5"  # type: ignore[misc]


# ---- undetectable bands ----


@pytest.mark.parametrize("gene", ["ABL1", "GUSB"])
@pytest.mark.parametrize("band", [0, 1, 2])
def test_undetectable_band_edges(gene: str, band: int) -> None:
    level, copies = PUBLISHED_BANDS[gene][band]
    at = classify_result(control_gene=gene, control_copies=copies, bcr_abl1_copies=0)
    above = classify_result(control_gene=gene, control_copies=copies + 1, bcr_abl1_copies=0)
    below = classify_result(control_gene=gene, control_copies=copies - 1, bcr_abl1_copies=0)
    assert at.level == level and above.level == level
    expected_below = PUBLISHED_BANDS[gene][band + 1][0] if band < 2 else "MMR"
    assert below.level == expected_below


@pytest.mark.parametrize("gene", ["ABL1", "GUSB"])
def test_undetectable_given_as_is_percent_zero_uses_bands(gene: str) -> None:
    level, copies = PUBLISHED_BANDS[gene][1]
    c = classify_result(control_gene=gene, control_copies=copies, is_percent=0.0)
    assert c.level == level and c.detectable is False


def test_undetectable_values() -> None:
    c = classify_result(control_gene="ABL1", control_copies=50_000, bcr_abl1_copies=0)
    assert c.is_percent is None and c.is_percent_exact is None
    assert c.sensitivity_percent == pytest.approx(100 / 50_000)
    assert c.upper_is_percent == c.sensitivity_percent
    assert c.mr_value == pytest.approx(2 - math.log10(100 / 50_000))
    assert c.mr_value_is_lower_bound is True
    assert c.deep_response_evaluable is True


BELOW_MR4_BAND = [
    (gene, copies)
    for gene in ("ABL1", "GUSB")
    for copies in (1, 5, 50, 500, 999.5, 5_000, 9_999, 9_999.9, 23_999, 23_999.9)
    if copies < PUBLISHED_BANDS[gene][-1][1]
]


@pytest.mark.parametrize(("gene", "copies"), BELOW_MR4_BAND)
def test_undetectable_below_mr4_band_never_mr4_or_deeper(gene: str, copies: float) -> None:
    c = classify_result(control_gene=gene, control_copies=copies, bcr_abl1_copies=0)
    assert not at_least(c.level, "MR4")
    assert c.deep_response_evaluable is False
    # What it can still show: the IS level of its sensitivity, capped at MMR.
    sensitivity = 100 / Fraction(str(copies))
    expected = next((lvl for lvl, b in PUBLISHED_IS if sensitivity <= Fraction(b)), "NONE")
    if level_rank(expected) > level_rank("MMR"):
        expected = "MMR"
    assert c.level == expected
    assert "MR4" in c.reason and "Cross 2015" in c.reason


def test_undetectable_5000_abl1_reason() -> None:
    c = classify_result(control_gene="ABL1", control_copies=5_000, bcr_abl1_copies=0)
    assert c.level == "MMR"
    assert "5,000" in c.reason and "10,000" in c.reason and "0.02%" in c.reason


def test_undetectable_with_poor_sensitivity_scores_shallow() -> None:
    # 500 ABL1: shows IS <= 0.2% (MR2); 50 ABL1: <= 2% (MR1); 5 ABL1: <= 20% (nothing).
    levels = [
        classify_result(control_gene="ABL1", control_copies=n, bcr_abl1_copies=0).level for n in (500, 50, 5)
    ]
    assert levels == ["MR2", "MR1", "NONE"]


# ---- sample adequacy ----


@pytest.mark.parametrize("gene", ["ABL1", "GUSB"])
def test_adequacy_edge(gene: str) -> None:
    minimum = ADEQUATE[gene]
    at = classify_result(control_gene=gene, control_copies=minimum, is_percent=0.005)
    below = classify_result(control_gene=gene, control_copies=minimum - 1, is_percent=0.005)
    assert at.adequate is True and at.level == "MR4" and at.deep_response_evaluable is True
    assert below.adequate is False and below.level == "MMR" and below.deep_response_evaluable is False
    assert "MR4" in below.reason and f"{minimum:,}" in below.reason


@pytest.mark.parametrize("gene", ["ABL1", "GUSB"])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_sensitivity_limited_edge(gene: str, offset: int) -> None:
    # The level is what the sample's sensitivity can show, not a measurement, below the MR4 band / adequacy
    # figure: undetectable there, or detectable in the MR4-or-deeper range and capped at MMR.
    copies = ADEQUATE[gene] + offset
    undetected = classify_result(control_gene=gene, control_copies=copies, bcr_abl1_copies=0)
    capped = classify_result(control_gene=gene, control_copies=copies, is_percent=0.005)
    measured = classify_result(control_gene=gene, control_copies=copies, is_percent=0.05)
    assert undetected.sensitivity_limited is (offset < 0) and capped.sensitivity_limited is (offset < 0)
    assert undetected.to_dict()["sensitivity_limited"] is (offset < 0)
    assert capped.level == ("MMR" if offset < 0 else "MR4")
    assert measured.sensitivity_limited is False and measured.level == "MMR"


def test_bcr_undetectable_is_sensitivity_limited() -> None:
    c = classify_result(control_gene="BCR", control_copies=1_000_000, bcr_abl1_copies=0)
    assert c.sensitivity_limited is True and c.level == "MMR"
    detected = classify_result(control_gene="BCR", control_copies=50_000, bcr_abl1_copies=2.5)
    assert detected.sensitivity_limited is False and detected.level == "MR4"


def test_inadequate_detectable_is_scored_by_is_when_not_deep() -> None:
    c = classify_result(control_gene="ABL1", control_copies=5_000, is_percent=0.5)
    assert c.level == "MR2" and c.adequate is False
    assert "limited sensitivity" in c.reason


def test_inadequate_detectable_in_mr5_range_capped_at_mmr() -> None:
    c = classify_result(control_gene="GUSB", control_copies=1_000, is_percent=0.0005)
    assert c.level == "MMR"
    assert c.is_percent == pytest.approx(0.0005)  # the measurement itself is still reported


# ---- BCR as control gene ----


def test_bcr_detectable_scored_by_is_adequacy_unknown() -> None:
    c = classify_result(control_gene="BCR", control_copies=50_000, bcr_abl1_copies=2.5)  # 0.005%
    assert c.level == "MR4"
    assert c.adequate is None
    assert "BCR" in c.reason


@pytest.mark.parametrize("copies", [1_000, 100_000, 10_000_000])
def test_bcr_undetectable_never_deep(copies: int) -> None:
    c = classify_result(control_gene="BCR", control_copies=copies, bcr_abl1_copies=0)
    assert not at_least(c.level, "MR4")
    assert c.deep_response_evaluable is False
    assert c.adequate is None
    assert "cannot be scored for deep response" in c.reason


# ---- input validation ----


@pytest.mark.parametrize(
    "kwargs",
    [
        {"control_gene": "ABL1", "control_copies": 1e5},
        {"control_gene": "ABL1", "control_copies": 1e5, "bcr_abl1_copies": 1, "is_percent": 0.001},
        {"control_gene": "HPRT", "control_copies": 1e5, "bcr_abl1_copies": 1},
        {"control_gene": "ABL1", "control_copies": 0, "bcr_abl1_copies": 1},
        {"control_gene": "ABL1", "control_copies": 1e5, "bcr_abl1_copies": -1},
        {"control_gene": "ABL1", "control_copies": 1e5, "bcr_abl1_copies": float("nan")},
        {"control_gene": "ABL1", "control_copies": 1e5, "bcr_abl1_copies": 1, "conversion_factor": 0},
    ],
)
def test_invalid_input_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        classify_result(**kwargs)


# ---- every result the API accepts can be scored ----


@pytest.mark.parametrize("control", [MIN_CONTROL_COPIES, 1e5, MAX_COPIES])
@pytest.mark.parametrize("copies", [0, 5e-324, 1e-9, 3.2, MAX_COPIES])
@pytest.mark.parametrize("cf", [*CONVERSION_FACTOR_RANGE, 1.0])
def test_corners_of_the_accepted_ranges_score(control: float, copies: float, cf: float) -> None:
    # The API's bounds (shared/schemas.py) keep every accepted result scorable: no overflow, no error.
    c = classify_result(
        control_gene="ABL1", control_copies=control, bcr_abl1_copies=copies, conversion_factor=cf
    )
    assert math.isfinite(c.mr_value) and math.isfinite(c.sensitivity_percent) and c.level in LEVELS
    assert math.isfinite(c.upper_is_percent)
    by_is = classify_result(
        control_gene="GUSB", control_copies=control, is_percent=min(copies, MAX_IS_PERCENT)
    )
    assert by_is.level in LEVELS


@pytest.mark.parametrize(
    ("gene", "copies", "cf", "level", "limited"),
    [
        ("ABL1", 10_000, 1.0, "MR4", False),  # the band as written
        ("ABL1", 10_000, 0.5, "MR4", False),  # a factor below 1 never deepens a band
        ("ABL1", 10_000, 2.0, "MMR", True),  # IS <= 0.02%: not MR4
        ("ABL1", 100_000, 5.0, "MR4", False),  # IS <= 0.005%: the MR5 band, capped at MR4
        ("ABL1", 32_000, 1.0, "MR4.5", False),  # IS <= 0.003125%
        ("ABL1", 32_000, 1.03, "MR4", False),  # IS <= 0.0032187...%: just over MR4.5's bound
        ("GUSB", 24_000, 2.0, "MR4", False),  # IS <= 0.0083%: GUSB bands are stricter than IS
        ("GUSB", 240_000, 1.0, "MR5", False),
    ],
)
def test_undetectable_band_never_claims_more_than_its_sensitivity(
    gene: str, copies: int, cf: float, level: str, limited: bool
) -> None:
    c = classify_result(control_gene=gene, control_copies=copies, bcr_abl1_copies=0, conversion_factor=cf)
    assert c.level == level and c.sensitivity_limited is limited
    assert c.sensitivity_exact <= Fraction(dict(PUBLISHED_IS)[level])
    if limited:
        assert "conversion factor" in c.reason and not c.deep_response_evaluable


# Undetectable below a limit the laboratory states, without control copies (HL7 `<^0.0032`, FHIR `<`):
# sensitivity unknown, so never MR4 or deeper; the limit's own level, capped at MMR (Cross 2015).
@pytest.mark.parametrize(
    ("limit", "level"),
    [
        ("0.0001", "MMR"),
        ("0.001", "MMR"),  # MR5's bound: still never deeper than MMR
        ("0.0032", "MMR"),
        ("0.01", "MMR"),
        ("0.1", "MMR"),  # at the MMR bound: shows IS <= 0.1%
        ("0.1000001", "MR2"),  # just above
        ("0.0999999", "MMR"),  # just below
        ("1", "MR2"),
        ("1.0000001", "MR1"),
        ("10", "MR1"),
        ("10.000001", "NONE"),
    ],
)
def test_below_a_stated_limit_without_control_copies_is_never_deep(limit: str, level: str) -> None:
    c = classify_result(control_gene=None, control_copies=None, is_percent_below=float(limit))
    assert c.level == level
    assert c.detectable is False and c.is_percent is None and c.mr_value_is_lower_bound is True
    assert c.sensitivity_known is False and c.sensitivity_limited is True
    assert c.deep_response_evaluable is False and c.adequate is None
    assert c.upper_is_percent_exact == Fraction(limit) and c.sensitivity_percent == float(limit)
    assert "sensitivity unknown" in c.reason and c.to_dict()["sensitivity_known"] is False


def test_below_a_stated_limit_keeps_a_named_control_gene() -> None:
    c = classify_result(control_gene="GUSB", control_copies=None, is_percent_below=0.0032)
    assert c.control_gene == "GUSB" and c.level == "MMR"


@pytest.mark.parametrize("extra", [{"control_copies": 50_000}, {"bcr_abl1_copies": 0}, {"is_percent": 0}])
def test_below_a_stated_limit_stands_alone(extra: dict) -> None:
    kwargs = {"control_gene": "ABL1", "control_copies": None, "is_percent_below": 0.0032, **extra}
    with pytest.raises(ValueError, match="stands alone"):
        classify_result(**kwargs)


def test_a_result_with_control_copies_knows_its_sensitivity() -> None:
    c = classify_result(control_gene="ABL1", control_copies=50_000, bcr_abl1_copies=0)
    assert c.sensitivity_known is True and c.to_dict()["sensitivity_known"] is True
