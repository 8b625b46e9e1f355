"""Loading the R reference cohorts and comparing our figures with R's (None where R gives NA)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO / "tests" / "reference"
DATA_DIR = Path(__file__).resolve().parent / "data"
DAYS_PER_MONTH = 365.25 / 12

# The brief's tolerances: estimates and variances 1e-9, CI bounds and test statistics 1e-6 (absolute).
TOL_EST = 1e-9
TOL_CI = 1e-6


@dataclass(frozen=True)
class Cohort:
    name: str
    frame: pd.DataFrame

    def subset(self, group: str) -> pd.DataFrame:
        return self.frame if group == "__all__" else self.frame[self.frame["group"] == group]

    @property
    def groups(self) -> list[str]:
        return ["__all__", *sorted(self.frame["group"].unique())]


def load_cohort(csv_path: Path) -> Cohort:
    return Cohort(csv_path.stem, pd.read_csv(csv_path, dtype={"group": str}))


def reference_pairs() -> list[tuple[Path, Path]]:
    """Every cohort CSV with the JSON that tests/reference/reference.R made from it."""
    pairs = []
    for folder in (REFERENCE_DIR, DATA_DIR):
        for js in sorted(folder.glob("*.json")):
            if js.name.endswith(".extra.json"):
                continue
            pairs.append((js.with_suffix(".csv"), js))
    return pairs


def extra_pairs() -> list[tuple[Path, Path]]:
    """Every cohort CSV with the JSON that tests/stats/data/reference_extra.R made from it."""
    pairs = []
    for js in sorted(DATA_DIR.glob("*.extra.json")):
        stem = js.name.removesuffix(".extra.json")
        csv = DATA_DIR / f"{stem}.csv"
        pairs.append((csv if csv.exists() else REFERENCE_DIR / f"{stem}.csv", js))
    return pairs


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def assert_close(ours: Sequence[float | None], r: Sequence[float | None], tol: float, what: str) -> None:
    """Same length, None exactly where R has null, and within ``tol`` elsewhere."""
    assert len(ours) == len(r), f"{what}: length {len(ours)} != R's {len(r)}"
    for i, (a, b) in enumerate(zip(ours, r, strict=True)):
        if b is None:
            assert a is None, f"{what}[{i}]: R gives NA, we give {a!r}"
        else:
            assert a is not None, f"{what}[{i}]: R gives {b!r}, we give None"
            assert abs(a - b) <= tol, f"{what}[{i}]: {a!r} vs R {b!r} (|diff| {abs(a - b):.3g} > {tol})"


def columns(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        frame["time_days"].to_numpy(dtype=float),
        frame["status"].to_numpy(dtype=np.int64),
        frame["group"].to_numpy(dtype=str),
    )
