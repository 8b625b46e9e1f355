"""Time rules (clinical-rules.md s.6): months = days / 30.4375; collection dates as written."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from shared.clinical.timeline import (
    DAYS_PER_MONTH,
    months_between,
    months_to_days,
    parse_date,
    years_to_days,
)


def test_days_per_month_is_a_julian_year_over_twelve() -> None:
    assert DAYS_PER_MONTH == 365.25 / 12 == 30.4375


def test_months_between_divides_days() -> None:
    start, end = date(2020, 1, 1), date(2021, 1, 1)
    assert months_between(start, end) == (end - start).days / 30.4375
    assert months_between(end, start) == -months_between(start, end)


def test_four_julian_years_are_48_months() -> None:
    assert months_between(date(2016, 1, 1), date(2020, 1, 1)) == 48.0  # 1461 days


def test_exact_durations() -> None:
    assert months_to_days(3) * 16 == 1461  # 91.3125 days
    assert years_to_days(2) * 2 == 1461  # 730.5 days
    assert years_to_days(5) * 4 == 7305  # 1826.25 days


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01", date(2024, 3, 1)),
        ("2024-03-01T10:15:00", date(2024, 3, 1)),
        ("2024-03-01T23:30:00Z", date(2024, 3, 1)),
        ("2024-03-01T23:30:00-05:00", date(2024, 3, 1)),  # would be 2024-03-02 in UTC: the written day counts
        ("2024-03-01T00:30:00+01:00", date(2024, 3, 1)),  # would be 2024-02-29 in UTC
        ("2024-03-01T08:00:00.123+01:00", date(2024, 3, 1)),
    ],
)
def test_parse_date_keeps_date_as_written(text: str, expected: date) -> None:
    assert parse_date(text) == expected


def test_parse_date_accepts_date_objects() -> None:
    assert parse_date(date(2024, 1, 2)) == date(2024, 1, 2)
    assert parse_date(datetime(2024, 1, 2, 23, 59)) == date(2024, 1, 2)


@pytest.mark.parametrize("bad", ["2024-13-01", "01/03/2024", "", "2024-03-01Tnoon", 20240301])
def test_parse_date_rejects_garbage(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_date(bad)  # type: ignore[arg-type]
