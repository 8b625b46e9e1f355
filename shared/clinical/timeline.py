"""Dates and durations for the clinical rules.

clinical-rules.md section 6: months = days / 30.4375 (a year of 365.25 days over 12), everywhere.
Threshold comparisons on durations use `DAYS_PER_MONTH_EXACT` so that "> 5 years" or "within 1 month" is
decided exactly on whole days, never by float rounding.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from fractions import Fraction

DAYS_PER_MONTH = 365.25 / 12  # = 30.4375 exactly in binary floating point
DAYS_PER_MONTH_EXACT = Fraction(36525, 1200)  # the same value as a Fraction (243.5 / 8 = 30.4375)
MONTHS_PER_YEAR = 12


def months_between(start: date, end: date) -> float:
    """Months from `start` to `end` (negative if `end` is earlier), as days / 30.4375."""
    return (end - start).days / DAYS_PER_MONTH


def days_between(start: date, end: date) -> int:
    return (end - start).days


def months_to_days(months: int | Fraction) -> Fraction:
    """Exact length of `months` months in days (3 months = 91.3125 days)."""
    return Fraction(months) * DAYS_PER_MONTH_EXACT


def years_to_days(years: int | Fraction) -> Fraction:
    """Exact length of `years` years in days (2 years = 730.5 days)."""
    return months_to_days(Fraction(years) * MONTHS_PER_YEAR)


def parse_date(value: str | date | datetime) -> date:
    """Date part of "YYYY-MM-DD" or an ISO 8601 date-time, as written.

    A date-time with an offset ("Z", "+01:00") keeps its own calendar day: the lab's day of collection is the
    clinically meaningful one, and converting to UTC could move a late-evening sample to the next day.
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date or date-time string, got {value!r}")
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        # Validate the whole string (Python 3.11 accepts "Z"), then keep the date as written.
        return datetime.fromisoformat(text).date()
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or date-time: {value!r}") from None


def collection_order(collected_at: str, result_id: str) -> tuple:
    """Sort key of results in collection order: by the day as written; within a day, results with a time
    by the instant (offsets compared: "23:30+02:00" is before "22:00Z"; a time without offset is taken as
    UTC), after those with a date only; then result_id, so the order never depends on storage order."""
    day = parse_date(collected_at)
    if len(collected_at.strip()) == 10:
        return (day, 0, 0.0, result_id)
    moment = datetime.fromisoformat(collected_at.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (day, 1, moment.timestamp(), result_id)


def iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()
