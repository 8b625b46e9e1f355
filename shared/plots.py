"""Cumulative incidence curves drawn with matplotlib: both estimators, their 95% CI bands, and the
numbers at risk under the axis (the layout of a published CML figure)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display in servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from shared.cohorts import ENDPOINT, CohortData  # noqa: E402
from shared.stats import DAYS_PER_MONTH  # noqa: E402

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
STYLES = {"aalen_johansen": ("Aalen-Johansen (competing events)", "#1f5fa8"),
          "one_minus_km": ("1 - Kaplan-Meier (competing events censored)", "#c0392b")}  # fmt: skip
CI_ALPHA = 0.15


def _steps(curve: dict, name: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Step coordinates starting at (0, 0), carried to the last follow-up time."""
    part = curve[name]
    t = [0.0, *curve["time_months"]]
    est = [0.0, *(v if v is not None else float("nan") for v in part["estimate"])]
    lo = [0.0, *(v if v is not None else float("nan") for v in part["lower"])]
    hi = [0.0, *(v if v is not None else float("nan") for v in part["upper"])]
    last = curve.get("last_time_days")
    if last is not None:
        t.append(last / DAYS_PER_MONTH)
        est.append(est[-1])
        lo.append(lo[-1])
        hi.append(hi[-1])
    return t, est, lo, hi


def render_curve(curve: dict, data: CohortData, fmt: str) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=100)
    try:
        for name, (label, colour) in STYLES.items():
            t, est, lo, hi = _steps(curve, name)
            ax.step(t, est, where="post", color=colour, label=label)
            ax.fill_between(t, lo, hi, step="post", color=colour, alpha=CI_ALPHA, linewidth=0)
        endpoint = curve.get("definition", {}).get("endpoint", "endpoint")
        ax.set_ylabel(f"Cumulative incidence of {endpoint}")
        ax.set_xlabel("Months from enrolment")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, max(12.0, (curve.get("last_time_days") or 0) / DAYS_PER_MONTH))
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        # Numbers at risk under the axis, at its ticks (as published Kaplan-Meier figures show them).
        ticks = [t for t in ax.get_xticks() if 0 <= t <= ax.get_xlim()[1]]
        below = {"xytext": (0, -50), "textcoords": "offset points", "fontsize": 8, "annotation_clip": False}
        for t in ticks:
            n = int((data.time_days >= t * DAYS_PER_MONTH).sum())
            ax.annotate(str(n), (t, 0), ha="center", **below)
        ax.annotate("At risk", (0, 0), ha="right", **{**below, "xytext": (-22, -50)})
        events = int((data.status == ENDPOINT).sum())
        name = curve.get("cohort_id", "")
        ax.set_title(f"Cohort {name}: {len(data.patients)} evaluable, {events} reached {endpoint}")
        fig.subplots_adjust(bottom=0.22, left=0.16)
        buf = io.BytesIO()
        # SVG text kept as text, not glyph outlines: searchable, and read out by screen readers.
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(buf, format=fmt)
        return buf.getvalue()
    finally:
        plt.close(fig)
