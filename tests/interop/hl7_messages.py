"""ER7 messages for the HL7 v2 tests (segments joined with CR, as on the wire)."""

from __future__ import annotations

MSH = "MSH|^~\\&|LAB|HOSP|CML|HOSP|20240301090000||ORU^R01|{control}|P|{version}"


def oru(
    patient: str,
    accession: str,
    obx: list[str],
    control: str = "MSG0001",
    version: str = "2.5.1",
    collected: str = "20240301083000+0100",
    pid3: str | None = None,
    extra: list[str] | None = None,
) -> str:
    """One ORU^R01 with one PID and one OBR group; `obx` are the OBX segments after OBX|n|."""
    segments = [
        MSH.format(control=control, version=version),
        f"PID|1||{pid3 or patient + '^^^HOSP^MR'}||DOE^JANE",
        f"OBR|1|ORD1|{accession}^LAB|BCRABL^BCR-ABL1 qPCR^L|||{collected}",
        *(f"OBX|{i}|{seg}" for i, seg in enumerate(obx, 1)),
        *(extra or []),
    ]
    return "\r".join(segments) + "\r"


def copies(bcr: float | str = 50, abl1: float = 100000, status: str = "F") -> list[str]:
    return [
        f"NM|BCRABL1-COPIES^BCR-ABL1 copies^L||{bcr}|{{copies}}|||||{status}",
        f"NM|ABL1-COPIES^ABL1 copies^L||{abl1}|{{copies}}|||||{status}",
    ]


def oru_groups(patient: str, groups: list[tuple[str, str, list[str]]], control: str = "MSG0001") -> str:
    """One ORU^R01 with one PID and several OBR groups: (accession, OBR-7, OBX segments)."""
    segments = [MSH.format(control=control, version="2.5.1"), f"PID|1||{patient}^^^HOSP^MR"]
    for n, (accession, collected, obx) in enumerate(groups, 1):
        segments.append(f"OBR|{n}||{accession}^LAB|BCRABL^BCR-ABL1 qPCR^L|||{collected}")
        segments += [f"OBX|{i}|{seg}" for i, seg in enumerate(obx, 1)]
    return "\r".join(segments) + "\r"
