"""ORU^R01 to result documents, with the segment and field each value came from (no Redis)."""

from __future__ import annotations

import json

import hl7
import pytest

from shared.config import load_settings
from shared.interop.codes import CodeMap, load_code_map
from shared.interop.hl7_ack import build_ack, build_batch_ack
from shared.interop.hl7_oru import Issue, Location, check_header, hl7_time, parse_oru, read_header
from shared.interop.hl7v2 import Door, handle_message, to_text
from tests.interop.hl7_messages import copies, oru


def parsed(text: str, codes: CodeMap | None = None, authority: str = ""):
    return parse_oru(hl7.parse(to_text(text)), codes or CodeMap(), authority)


def errs(p) -> list[tuple[str, int, str]]:
    return [(i.location.erl(), i.code, i.severity) for i in p.errors]


def test_copies_map_to_the_json_document():
    p = parsed(oru("12345", "ACC-1", copies()))
    assert p.errors == [] and p.warnings == []
    assert p.docs == [{
        "patient_id": "12345", "result_id": "ACC-1", "collected_at": "2024-03-01T08:30:00+01:00",
        "bcr_abl1_copies": 50.0, "status": "final", "control_copies": 100000.0, "control_gene": "ABL1",
    }]  # fmt: skip
    where = {k: v.erl() for k, v in p.where[0].items()}
    assert where["bcr_abl1_copies"] == "OBX^1^5" and where["control_copies"] == "OBX^2^5"
    assert where["patient_id"] == "PID^1^3" and where["result_id"] == "OBR^1^3"


@pytest.mark.parametrize(("code", "status"), [("F", "final"), ("C", "corrected"), ("D", "entered-in-error"),
                                               ("W", "entered-in-error")])  # fmt: skip
def test_result_status_mapping(code, status):
    assert parsed(oru("1", "A", copies(status=code))).docs[0]["status"] == status


def test_preliminary_is_refused_with_the_reason():
    p = parsed(oru("1", "A", copies(status="P")))
    assert errs(p) == [("OBX^1^11", 103, "E")]
    assert "preliminary" in p.errors[0].text


def test_mixed_statuses_name_the_obx():
    obx = copies()
    obx[1] = obx[1].replace("|||||F", "|||||C")
    assert errs(parsed(oru("1", "A", obx))) == [("OBX^2^11", 103, "E")]


def test_undetectable_is_percent_with_control_copies_is_copies_zero():
    obx = ["SN|69380-4^BCR-ABL1/ABL1 IS^LN||<^0.0032|%|||||F", copies()[1]]
    doc = parsed(oru("1", "A", obx)).docs[0]
    assert (
        doc["bcr_abl1_copies"] == 0.0 and doc["control_copies"] == 100000.0 and doc["control_gene"] == "ABL1"
    )
    assert "is_percent" not in doc and "is_percent_below" not in doc


def test_undetectable_is_percent_without_control_copies_stands_alone():
    doc = parsed(oru("1", "A", ["SN|69380-4^^LN||<^0.0032|%|||||F"])).docs[0]
    assert doc["is_percent_below"] == 0.0032
    assert not {"control_gene", "control_copies", "bcr_abl1_copies", "is_percent"} & set(doc)


def test_copies_zero_and_nm_is_percent():
    assert parsed(oru("1", "A", copies(bcr=0))).docs[0]["bcr_abl1_copies"] == 0.0
    obx = ["NM|69380-4^^LN||0.05|%|||||F", "NM|GUSB-COPIES^^L||80000||||||F", "NM|IS-CF^^L||0.9||||||F"]
    doc = parsed(oru("1", "A", obx)).docs[0]
    assert (doc["is_percent"], doc["control_gene"], doc["conversion_factor"]) == (0.05, "GUSB", 0.9)


def test_bad_values_are_named():
    assert errs(parsed(oru("1", "A", copies(bcr="lots")))) == [("OBX^1^5", 102, "E")]
    assert errs(parsed(oru("1", "A", ["SN|69380-4^^LN||>^0.1|%|||||F"]))) == [("OBX^1^5", 102, "E")]
    assert errs(parsed(oru("1", "A", ["ST|69380-4^^LN||low|%|||||F"]))) == [("OBX^1^2", 102, "E")]


def test_local_codes_from_a_lab_codes_file(tmp_path):
    path = tmp_path / "codes.json"
    path.write_text(json.dumps({"BCRQ": "BCRABL1-COPIES", "ABLQ": "ABL1-COPIES"}))
    obx = ["NM|BCRQ^BCR-ABL1^99LAB||7||||||F", "NM|ABLQ^ABL1^99LAB||70000||||||F"]
    doc = parsed(oru("1", "A", obx), load_code_map(str(path))).docs[0]
    assert (doc["bcr_abl1_copies"], doc["control_copies"], doc["control_gene"]) == (7.0, 70000.0, "ABL1")
    # Without the file the codes are not guessed: both ignored, named, and nothing is left to store.
    p = parsed(oru("1", "A", obx))
    assert [(w.location.erl(), w.severity) for w in p.warnings] == [("OBX^1^3", "W"), ("OBX^2^3", "W")]
    assert "BCRQ" in p.warnings[0].text and errs(p) == [("OBR^1^4", 101, "E")]


def test_unmapped_obx_is_a_warning_beside_a_good_result():
    p = parsed(oru("1", "A", [*copies(), "NM|HB^Haemoglobin^99LAB||13.5|g/dL|||||F"]))
    assert p.errors == [] and len(p.docs) == 1
    assert [(w.location.erl(), w.code, w.severity) for w in p.warnings] == [("OBX^3^3", 103, "W")]


def test_pid3_authority_selection():
    pid3 = "MRN-9^^^OTHER^MR~12345^^^HOSP^MR"
    assert parsed(oru("x", "A", copies(), pid3=pid3)).docs[0]["patient_id"] == "MRN-9"
    assert parsed(oru("x", "A", copies(), pid3=pid3), authority="HOSP").docs[0]["patient_id"] == "12345"
    p = parsed(oru("x", "A", copies(), pid3=pid3), authority="ELSEWHERE")
    assert errs(p) == [("PID^1^3", 101, "E")]


def test_spm17_wins_over_obr7():
    spm = "SPM|1|||BLD|||||||||||||20240229071500"
    assert parsed(oru("1", "A", copies(), collected="20240301")).docs[0]["collected_at"] == "2024-03-01"
    doc = parsed(oru("1", "A", copies(), collected="20240301", extra=[spm])).docs[0]
    assert doc["collected_at"] == "2024-02-29T07:15:00"


def test_hl7_times():
    assert hl7_time("20240301083000+0100") == "2024-03-01T08:30:00+01:00"
    assert hl7_time("202403010830") == "2024-03-01T08:30:00"
    assert hl7_time("20240301") == "2024-03-01"
    assert hl7_time("2024-03-01") is None and hl7_time("") is None


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_supported_versions(version):
    assert check_header(read_header(hl7.parse(to_text(oru("1", "A", copies(), version=version))))) == []


@pytest.mark.parametrize("version", ["2.2", "2.6", ""])
def test_other_versions_are_rejected(version):
    issues = check_header(read_header(hl7.parse(to_text(oru("1", "A", copies(), version=version)))))
    assert [(i.location.erl(), i.code) for i in issues] == [("MSH^1^12", 203)]


def test_escape_sequences_are_unescaped_and_acks_escape():
    text = oru("1", "A", [*copies(), "NM|X\\T\\Y^A\\F\\B^99LAB||1||||||F"])
    p = parsed(text)
    assert "code X&Y (A|B, 99LAB)" in p.warnings[0].text
    ack = build_ack(p.header, "AA", p.warnings).text
    assert "code X\\T\\Y (A\\F\\B, 99LAB)" in ack and ack.count("\r") == 3


def test_several_obr_groups_and_patients():
    text = (
        oru("P1", "A1", copies())
        + "PID|2||P2^^^HOSP^MR\rOBR|2||A2^LAB||||20240302\r"
        + "\r".join(f"OBX|{i}|{s}" for i, s in enumerate(copies(bcr=5), 3))
    )
    p = parsed(text)
    assert [(d["patient_id"], d["result_id"], d["bcr_abl1_copies"]) for d in p.docs] == [
        ("P1", "A1", 50.0),
        ("P2", "A2", 5.0),
    ]
    assert p.where[1]["patient_id"].erl() == "PID^2^3" and p.where[1]["result_id"].erl() == "OBR^2^3"


def test_lf_separated_bodies_are_read():
    assert parsed(oru("1", "A", copies()).replace("\r", "\n")).docs[0]["result_id"] == "A"


def test_acks():
    header = read_header(hl7.parse(to_text(oru("1", "A", copies(), control="C-77", version="2.4"))))
    lines = build_ack(header, "AA").text.split("\r")
    assert lines[0].startswith("MSH|^~\\&|CML|HOSP|LAB|HOSP|") and "|ACK^R01^ACK|" in lines[0]
    assert lines[0].endswith("|P|2.4") and lines[1] == "MSA|AA|C-77"
    batch = build_batch_ack([build_ack(header, "AA"), build_ack(header, "AE", http_status=409)])
    assert batch.text.startswith("FHS|") and "\rBTS|2\rFTS|1\r" in batch.text and batch.http_status == 409


DOOR = Door("tests", "unit")


@pytest.mark.parametrize(
    "raw", [b"", b"hello", b"MSH", b"\x00\xff\xfe", b"PID|1||x\r", b"MSH|^~\\&|" + b"|" * 50]
)
def test_garbage_is_answered_ar_without_touching_the_store(raw):
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    assert ack.code == "AR" and ack.http_status == 400
    assert ack.text.split("\r")[1] == "MSA|AR|"


def test_unsupported_version_keeps_the_control_id():
    raw = oru("1", "A", copies(), control="C-26", version="2.6")
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    assert ack.text.split("\r")[1] == "MSA|AR|C-26" and "ERR||MSH^1^12|203^" in ack.text


def test_batch_answers_one_ack_per_message():
    one, two = (oru("1", "A", copies(), control=c, version="2.2") for c in ("B-1", "B-2"))
    raw = "FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + one + two + "BTS|2\rFTS|1\r"
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    lines = ack.text.split("\r")
    assert lines[0].startswith("FHS|") and lines[1].startswith("BHS|")
    assert [x for x in lines if x.startswith("MSA")] == ["MSA|AR|B-1", "MSA|AR|B-2"]
    assert "BTS|2" in lines and ack.code == "AR" and ack.http_status == 400


# --- review fixes -----------------------------------------------------------------------------------


def test_obx3_alternate_identifier_is_read_when_the_first_is_a_local_code():
    obx = ["NM|LOCAL1^BCR-ABL IS^L^69380-4^BCR-ABL1 IS^LN||0.05|%|||||F", "NM|ABL1-COPIES^^L||100000||||||F"]
    p = parsed(oru("1", "A", obx))
    assert p.errors == [] and p.warnings == [] and p.docs[0]["is_percent"] == 0.05
    unknown = parsed(oru("1", "A", [*copies(), "NM|LOCAL1^X^L^HB^Hb^99LAB||1||||||F"]))
    assert [w.location.erl() for w in unknown.warnings] == ["OBX^3^3"]
    assert "LOCAL1 (X, L) nor HB (Hb, 99LAB)" in unknown.warnings[0].text


@pytest.mark.parametrize("value", ["1_000", "5E1", "inf", "nan", "1e3", "0x10", "+", ".", "1.2.3", " "])
def test_nm_is_the_hl7_nm_pattern_not_float(value):
    assert errs(parsed(oru("1", "A", copies(bcr=value)))) == [("OBX^1^5", 102, "E")]
    sn = parsed(oru("1", "A", [f"SN|69380-4^^LN||<^{value}|%|||||F"]))
    assert errs(sn) == [("OBX^1^5", 102, "E")]


@pytest.mark.parametrize(("value", "number"), [("50", 50.0), ("+50.", 50.0), (".5", 0.5), ("-0.25", -0.25)])
def test_nm_numbers_are_read(value, number):
    p = parsed(oru("1", "A", copies(bcr=value)))
    assert p.docs[0].get("bcr_abl1_copies") == number


def test_v23_err1_is_an_eld_and_msa3_the_first_error():
    header = read_header(hl7.parse(to_text(oru("1", "A", copies(), control="C-23", version="2.3"))))
    issues = [
        Issue(Location("MSH", 1, 9, 2), 201, "event 'R30': send ORU^R01"),
        Issue(None, 207, "store down"),
    ]
    lines = build_ack(header, "AR", issues).text.split("\r")
    assert lines[1] == "MSA|AR|C-23|event 'R30': send ORU\\S\\R01"
    assert lines[2].split("|")[1:3] == [
        "MSH^1^9^201&Unsupported event code&HL70357", "MSH^1^9^1^2",
    ]  # fmt: skip
    assert lines[3].split("|")[1] == "^^^207&Application internal error&HL70357"
    # 2.5: no ERR-1, no MSA-3.
    v25 = read_header(hl7.parse(to_text(oru("1", "A", copies(), control="C-25"))))
    lines = build_ack(v25, "AR", issues).text.split("\r")
    assert lines[1] == "MSA|AR|C-25" and lines[2].startswith("ERR||MSH^1^9^1^2|")


def test_the_ack_echoes_event_and_processing_id():
    text = oru("1", "A", copies(), control="C-T", version="2.3").replace("|C-T|P|", "|C-T|T|")
    header = read_header(hl7.parse(to_text(text)))
    msh = build_ack(header, "AA").text.split("\r")[0].split("|")
    assert (msh[8], msh[10]) == ("ACK^R01", "T")
    msh = build_ack(read_header(hl7.parse(to_text(oru("1", "A", copies())))), "AA").text.split("|")
    assert (msh[8], msh[10]) == ("ACK^R01^ACK", "P")


@pytest.mark.parametrize("processing", ["T", "D"])
def test_training_and_debugging_messages_are_rejected(processing):
    raw = oru("1", "A", copies(), control="C-T").replace("|C-T|P|", f"|C-T|{processing}|")
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    lines = ack.text.split("\r")
    assert ack.code == "AR" and lines[1] == "MSA|AR|C-T" and lines[0].split("|")[10] == processing
    assert lines[2].startswith("ERR||MSH^1^11|202^") and "training/debugging" in lines[2]


def test_two_messages_outside_a_batch_are_rejected_whole():
    raw = oru("1", "A", copies(), control="C-1") + oru("1", "B", copies(), control="C-2")
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    lines = ack.text.split("\r")
    assert lines[1] == "MSA|AR|C-1" and lines[2].startswith("ERR||MSH^2|100^")
    assert "one message per frame" in lines[2] and "FHS/BHS batch" in lines[2]


@pytest.mark.parametrize(
    ("msh18", "codec"),
    [("8859/1", "iso-8859-1"), ("8859/15", "iso-8859-15"), ("UNICODE UTF-8", "utf-8"), ("", "utf-8")],
)
def test_msh18_names_the_charset_read_and_answered(msh18, codec):
    text = oru("1", "A", [*copies(), "NM|HB^Hämoglobin^99LAB||1||||||F"], control="C-CS", version="2.2")
    text = text.replace("|2.2\r", f"|2.2||||||{msh18}\r") if msh18 else text
    ack = handle_message(None, None, text.encode(codec), DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    assert ack.charset == codec and ack.text.split("\r")[1] == "MSA|AR|C-CS"
    assert ack.text.split("\r")[0].split("|")[17:] == ([msh18] if msh18 else [])
    header = read_header(hl7.parse(to_text(text.encode(codec), codec)))
    assert header.charset == msh18
    parsed_text = parse_oru(hl7.parse(to_text(text.encode(codec), codec)), CodeMap(), "")
    assert "Hämoglobin" in parsed_text.warnings[0].text


def test_8859_15_is_not_read_as_latin_1():
    text = oru("1", "A", [*copies(), "NM|HB^€^99LAB||1||||||F"]).replace("|2.5.1\r", "|2.5.1||||||8859/15\r")
    from shared.interop.hl7v2 import declared_charset

    raw = text.encode("iso-8859-15")
    assert declared_charset(raw) == "8859/15"
    assert "€" in to_text(raw, "iso-8859-15") and "€" not in raw.decode("latin-1")


def test_an_unknown_charset_is_rejected_naming_msh18():
    raw = oru("1", "A", copies(), control="C-8").replace("|2.5.1\r", "|2.5.1||||||8859/2\r").encode()
    ack = handle_message(None, None, raw, DOOR, load_settings(), CodeMap())  # type: ignore[arg-type]
    lines = ack.text.split("\r")
    assert ack.code == "AR" and lines[1] == "MSA|AR|C-8" and lines[2].startswith("ERR||MSH^1^18|103^")


def test_batch_ack_echoes_file_and_batch_control_ids():
    one = oru("1", "A", copies(), control="B-1", version="2.2")
    raw = f"FHS|^~\\&|LAB||||||||F-11\rBHS|^~\\&|LAB||||||||B-11\r{one}BTS|1\rFTS|1\r"
    lines = handle_message(None, None, raw, DOOR, load_settings(), CodeMap()).text.split("\r")  # type: ignore[arg-type]
    assert lines[0].split("|")[11] == "F-11" and lines[1].split("|")[11] == "B-11"
    assert lines[0].split("|")[10] and lines[0].split("|")[10] != lines[1].split("|")[10]


def test_the_ack_memory_digest_ignores_msh7_only():
    from shared.interop.hl7v2 import _digest

    text = to_text(oru("1", "A", [*copies(), "NM|X\\F\\Y^A^99LAB||1||||||F"]))
    later = text.replace("|20240301090000|", "|20240301091500|")
    assert later != text and _digest(hl7.parse(later)) == _digest(hl7.parse(text))
    assert _digest(hl7.parse(text.replace("|50|", "|51|"))) != _digest(hl7.parse(text))
