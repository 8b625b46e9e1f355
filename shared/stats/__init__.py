"""Cohort statistics for molecular-response endpoints, matching R's survival and cmprsk.

Pure numpy, no I/O, deterministic. Times are in days; every result is JSON-ready (Python floats,
ints and None; use ``.as_dict()``).

- ``one_minus_km``: 1 - Kaplan-Meier with Greenwood variance and log(-log) CI (survival::survfit).
- ``cumulative_incidence``: exact Aalen-Johansen with cmprsk::cuminc's variance and a log(-log) CI.
- ``median_time``: median time to endpoint with its CI (print.survfit).
- ``logrank``: survival::survdiff; ``gray_test``: cmprsk::cuminc's Gray test.
"""

from .cumulative_incidence import cumulative_incidence
from .group_tests import gray_test, logrank
from .kaplan_meier import median_time, one_minus_km
from .results import CumulativeIncidence, GroupTest, HorizonEstimates, MedianTime, StepCurve

DAYS_PER_MONTH = 365.25 / 12  # the months used by the reference figures (tests/reference/README.md)

__all__ = [
    "DAYS_PER_MONTH",
    "CumulativeIncidence",
    "GroupTest",
    "HorizonEstimates",
    "MedianTime",
    "StepCurve",
    "cumulative_incidence",
    "gray_test",
    "logrank",
    "median_time",
    "one_minus_km",
]
