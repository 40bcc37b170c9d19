"""License files and contract CSVs → entitlements."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lictel.entitlements import PERMANENT, load_file
from lictel.errors import InputError

DATA = Path(__file__).resolve().parent.parent / "data" / "licenses"


def test_license_file_increment_and_feature_lines() -> None:
    got = {e.feature: e for e in load_file(DATA / "citrix.lic", "acme")}
    assert sorted(got) == ["CITRIX_STARTUP", "XDS_PLT_CCS", "XDT_ENT_UD", "XDT_PLT_CCU"]
    ccu = got["XDT_PLT_CCU"]
    assert (ccu.count, ccu.vendor, ccu.expiry, ccu.start, ccu.issued, ccu.line) == (
        500, "CITRIX", dt.date(2027, 5, 1), dt.date(2026, 4, 30), dt.date(2026, 5, 1), 5)
    assert ccu.vendor_string == ";LT=Retail;GP=720;CL=VDS,VDA,VDE,VDP;SA=1;ODP=0"
    assert ccu.supersede == "XDT_PLT_CCU" and ccu.dup_group == "NONE"
    ud = got["XDT_ENT_UD"]
    assert (ud.count, ud.expiry, ud.dup_group, ud.supersede) == (1200, PERMANENT, "UH", "")
    assert got["CITRIX_STARTUP"].uncounted and got["CITRIX_STARTUP"].count == 0
    assert got["XDS_PLT_CCS"].overdraft == 8 and got["XDS_PLT_CCS"].start == dt.date(2026, 1, 1)


def test_contract_csv() -> None:
    got = load_file(DATA / "contract.csv", "acme")
    assert [(e.feature, e.count, e.start, e.expiry, e.note, e.kind) for e in got] == [
        ("XDT_PLT_CCU", 250, dt.date(2026, 1, 1), dt.date(2026, 12, 31), "Renewal 2026", "contract"),
        ("XDT_ENT_UD", 100, dt.date(2026, 3, 1), PERMANENT, "", "contract"),
    ]


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 1 of .*broken.lic: license count 'lots'"):
        load_file(DATA / "broken.lic", "acme")
    bad = tmp_path / "bad.csv"
    bad.write_text("feature,count,start\nF,10,2026-13-01\n")
    with pytest.raises(InputError, match=r"line 2 of .*bad.csv: field 'start'"):
        load_file(bad, "acme")
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(InputError, match="no INCREMENT or FEATURE line"):
        load_file(other, "acme")
