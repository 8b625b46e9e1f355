"""Result types. Every field is a plain Python float, int, str, None or a list of them, so
``dataclasses.asdict`` (or ``.as_dict()``) gives a JSON-ready document with no numpy scalars."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class _AsDict:
    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HorizonEstimates(_AsDict):
    """A cumulative probability read off a step curve at fixed horizons.

    ``estimate``/``variance``/``lower``/``upper`` are None where R reports NA: beyond the last
    observed time, and for the log(-log) CI where it is undefined (estimate 0 or 1).
    ``n_at_risk`` is the number with time >= horizon (0 beyond the last time).
    """

    horizons_days: list[float]
    estimate: list[float | None]
    variance: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    n_at_risk: list[int]


@dataclass(frozen=True)
class StepCurve(_AsDict):
    """A right-continuous step function for plotting: 0 from time 0 until ``time_days[0]``, then
    ``estimate[i]`` on [``time_days[i]``, ``time_days[i + 1]``), the last step running to
    ``last_time_days`` (the largest follow-up time; None for an empty cohort).

    ``n_at_risk[i]`` is the number with time >= ``time_days[i]``.
    """

    time_days: list[float]
    estimate: list[float | None]
    variance: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    n_at_risk: list[int]
    last_time_days: float | None


@dataclass(frozen=True)
class CumulativeIncidence(_AsDict):
    """Aalen-Johansen cumulative incidence of one cause: at the horizons, and the whole curve."""

    cause: int
    at_horizons: HorizonEstimates
    curve: StepCurve


@dataclass(frozen=True)
class MedianTime(_AsDict):
    """Median time to endpoint with its CI, in days; None where not reached."""

    median: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class GroupTest(_AsDict):
    """A K-sample chi-square test. ``groups`` are the sorted labels; ``statistic``/``p_value``
    are None when the test is undefined (see the function's docstring)."""

    test: str
    groups: list[Any]
    statistic: float | None
    df: int
    p_value: float | None
