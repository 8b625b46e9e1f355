"""The TKI vocabulary: every name hospitals write for the drugs ELN 2020 covers, each with its class.

Source: clinical-rules.md section 7 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, treatment
section; asciminib's label, approved 2021). ELN 2020 counts "imatinib, brand or generic" as one drug:
a brand and its generic are the same drug, so a switch between them is not a change of therapy (no new
line, no change of dose history; clinical-rules.md section 8).

Names are matched case, spacing and hyphen insensitive ("GLIVEC", "Imatinib  Teva", "imatinib-mesylate").
A generic or a brand may be followed by a salt, a maker or a strength ("imatinib mesylate", "Imatinib Accord",
"Glivec 400 mg"): no name in the table starts another, so the prefix cannot mistake one drug for another.
An unknown name is refused at the door (services' schemas) and flagged in a status computed from data
stored before this table (`unknown_tki`): a misspelt drug would otherwise silently change the TFR duration
threshold and the count of lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from shared.clinical.timeline import years_to_days

FIRST_GENERATION = "first_generation"
SECOND_GENERATION = "second_generation"
THIRD_GENERATION = "third_generation"
STAMP_INHIBITOR = "stamp_inhibitor"


@dataclass(frozen=True)
class Tki:
    generic: str
    brands: tuple[str, ...]
    tki_class: str
    # ELN 2020 TFR minimal criterion: duration of TKI therapy must exceed this; None where ELN 2020
    # names no TFR setting for the drug (ponatinib after failure; asciminib came after it).
    tfr_min_days: Fraction | None
    source: str


ELN_2020_TREATMENT = "ELN 2020 (Hochhaus, Leukemia 2020), treatment section; clinical-rules.md s.7"

# clinical-rules.md section 7, one row per drug.
TKIS: tuple[Tki, ...] = (
    Tki("imatinib", ("Gleevec", "Glivec"), FIRST_GENERATION, years_to_days(5), ELN_2020_TREATMENT),
    Tki("nilotinib", ("Tasigna",), SECOND_GENERATION, years_to_days(4), ELN_2020_TREATMENT),
    Tki("dasatinib", ("Sprycel",), SECOND_GENERATION, years_to_days(4), ELN_2020_TREATMENT),
    Tki("bosutinib", ("Bosulif",), SECOND_GENERATION, years_to_days(4), ELN_2020_TREATMENT),
    Tki("ponatinib", ("Iclusig",), THIRD_GENERATION, None, ELN_2020_TREATMENT + " (after failure, or T315I)"),
    Tki(
        "asciminib",
        ("Scemblix",),
        STAMP_INHIBITOR,
        None,
        "Scemblix label (2021, after >= 2 TKIs; not covered by ELN 2020); clinical-rules.md s.7",
    ),
)

_BY_GENERIC = {t.generic: t for t in TKIS}
_BY_BRAND = {brand.lower(): t for t in TKIS for brand in t.brands}
_IGNORED = re.compile(r"[\s\-_®™]+")


def _key(name: str) -> str:
    return _IGNORED.sub("", name.lower())


def product_key(name: str | None) -> str | None:
    """A product name compared case, spacing and hyphen insensitive ("Glivec" is "GLIVEC")."""
    return None if name is None else _key(name)


def resolve_tki(name: str | None) -> Tki | None:
    """The drug a name stands for (generic, brand or generic product), or None if unknown or absent."""
    if not name:
        return None
    key = _key(name)
    if key in _BY_BRAND:
        return _BY_BRAND[key]
    key = key.removeprefix("generic")
    # A generic, or a brand, followed by a salt, a maker or a strength ("Glivec 400 mg"), but never by
    # another drug's name ("imatinib or nilotinib", "Glivec/Sprycel" name two drugs: refused).
    for t in TKIS:
        for name in (t.generic, *t.brands):
            if key.startswith(name.lower()):
                rest = key[len(name) :]
                others = (n.lower() for o in TKIS if o is not t for n in (o.generic, *o.brands))
                return None if any(n in rest for n in others) else t
    return None


def tki_generic(name: str | None) -> str | None:
    """The generic name of a TKI name, or the name itself (lower case, stripped) when unknown."""
    if name is None:
        return None
    drug = resolve_tki(name)
    return drug.generic if drug else name.strip().lower()


def accepted_names() -> str:
    """The accepted names, for an error message: 'imatinib (Gleevec, Glivec, generics), ...'."""
    return "; ".join(f"{t.generic} ({', '.join(t.brands)}, or its generics)" for t in TKIS)


def drug(generic: str | None) -> Tki | None:
    return None if generic is None else _BY_GENERIC.get(generic)
