"""The clinical thresholds as a document, for displays that draw them (the dashboard's IS% lines and
ELN milestone bands): derived from the tables the rules themselves use, so a chart can never show a
line the scoring does not apply.

Sources: the Cross 2015 IS% table (``response.IS_LEVEL_THRESHOLDS``) and the ELN 2020 milestones table
(``milestones.MILESTONE_BOUNDS``, ``AFTER_12M_BOUNDS``); clinical-rules.md sections 1 and 2.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from shared.clinical.milestones import AFTER_12M_BOUNDS, MILESTONE_BOUNDS, WINDOW_DAYS
from shared.clinical.response import IS_LEVEL_THRESHOLDS, LEVELS, format_percent
from shared.clinical.timeline import DAYS_PER_MONTH

# MR1 and MR2 are the guideline's 10% and 1% bounds; the rest are named molecular responses.
_LABELS = {"MR1": "10%", "MR2": "1%", "MMR": "MMR", "MR4": "MR4", "MR4.5": "MR4.5", "MR5": "MR5"}


def _number(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def response_reference() -> dict[str, Any]:
    """IS% bounds of each response level (deepest first) and the ELN 2020 milestone bounds."""
    return {
        "levels": list(LEVELS),
        "thresholds": [
            {
                "level": level,
                "is_percent_at_most": float(bound),
                "label": _LABELS[level],
                "text": f"{format_percent(bound)}%",
            }
            for level, bound in IS_LEVEL_THRESHOLDS
        ],
        "milestones": [
            {
                "milestone": name,
                "months": months,
                "optimal_at_most": _number(optimal),
                "warning_at_most": _number(warning),
            }
            for name, (months, optimal, warning) in MILESTONE_BOUNDS.items()
        ],
        "after_12m": {
            "optimal_at_most": float(AFTER_12M_BOUNDS[0]),
            "warning_at_most": float(AFTER_12M_BOUNDS[1]),
        },
        "window_days": float(WINDOW_DAYS),
        "days_per_month": DAYS_PER_MONTH,
        "source": "Cross 2015 IS% table; ELN 2020 milestones (clinical-rules.md s.1-2)",
    }
