"""Clinical rules for CML molecular-response monitoring (pure functions, no I/O).

Every rule cites /work/shared/clinical-rules.md and the paper behind it:
- response: one result's IS%, level, sensitivity, adequacy (Cross 2015; ELN 2020).
- timeline: months = days / 30.4375; collection dates as written.
- milestones: ELN 2020 milestones with the service's +-1 month window rule.
- eligibility: ACTIM entry and ELN 2020 TFR requirements.
- status: `patient_status`, the whole status document for one patient.
"""

from shared.clinical.response import LEVELS, Classification, at_least, classify_result, level_rank
from shared.clinical.status import patient_status
from shared.clinical.timeline import DAYS_PER_MONTH, months_between, parse_date

__all__ = [
    "DAYS_PER_MONTH",
    "LEVELS",
    "Classification",
    "at_least",
    "classify_result",
    "level_rank",
    "months_between",
    "parse_date",
    "patient_status",
]
