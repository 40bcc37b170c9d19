"""The vendor's view, pure parts: scrambling, the forms a name is tried in, reading the vendor side's
files (clean, damaged, in every layout), and sample windows (DST included)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from lictel.errors import ConfigError, InputError
from lictel.timeutil import parse_ts
from lictel.vendor import files
from lictel.vendor.ids import DEVICE, USER, Dictionary, forms, id_bytes, scramble
from lictel.vendor.view import Boundary, windows


def _vendor(text: str, encoding: str = "utf-8") -> str:
    """The documented algorithm, written out: SHA-256, first 16 bytes, base64."""
    return base64.b64encode(hashlib.sha256(text.encode(encoding)).digest()[:16]).decode()


@pytest.mark.parametrize("name", ["alice", "CORP\\Bob", "bob@corp.example", "PC-042.corp.example", "Zoë", "用户"])
def test_scramble_is_the_documented_algorithm(name: str) -> None:
    assert scramble(name) == _vendor(name)
    assert scramble(name, "utf-16le") == _vendor(name, "utf-16le")
    assert len(scramble(name)) == 24 and scramble(name).endswith("==")
    assert scramble(name) != scramble(name.upper()) or name.upper() == name


def test_forms_of_users_and_devices() -> None:
    u = forms("CORP\\Ann", USER)
    assert u["as written"] == "CORP\\Ann" and u["bare name"] == "Ann" and u["bare name, lower case"] == "ann"
    assert u["user@domain"] == "Ann@CORP"
    assert forms("ann@corp.example", USER)["DOMAIN\\user"] == "CORP\\ann"
    d = forms("PC-1.corp.example", DEVICE)
    assert d["short name"] == "PC-1" and d["short name, lower case"] == "pc-1"
    assert len(set(forms("ann", USER).values())) == len(forms("ann", USER))  # no form twice


def test_ids_parse_as_base64_or_hex_and_nothing_else() -> None:
    raw = hashlib.sha256(b"x").digest()[:16]
    assert id_bytes(base64.b64encode(raw).decode()) == raw
    assert id_bytes(raw.hex().upper()) == raw and id_bytes(f" {raw.hex()} ") == raw
    for junk in ("C39A925064A3", "not an id", "", base64.b64encode(b"short").decode(), "==" * 12):
        assert id_bytes(junk) is None


def test_dictionary_says_which_form_and_encoding_matched() -> None:
    book = Dictionary()
    book.add(["CORP\\Ann", "bob"], USER)
    book.add(["PC-1.corp.example"], DEVICE)
    m = book.match(_vendor("ANN", "utf-16le"))
    assert m is not None and (m.kind, m.name, m.form, m.encoding) == (USER, "CORP\\Ann", "bare name, upper case",
                                                                      "utf-16le")
    hexed = hashlib.sha256(b"pc-1").digest()[:16].hex()
    m = book.match(hexed)
    assert m is not None and (m.kind, m.name, m.form) == (DEVICE, "PC-1.corp.example", "short name, lower case")
    assert book.match(_vendor("carol")) is None and book.match("garbage") is None


BUNDLE = """<?xml version="1.0"?>
<Upload xmlns="urn:example">
 <LicenseServer><GUID>a5ae17c9</GUID><FQDN>lic01.corp.example</FQDN>
  <Inventory>
   <Feature><ID>XDT_PLT_CCU</ID><UDAdminUsersReleased>0</UDAdminUsersReleased>
    <SADate id="2026.0301"><DateSampleStartUTC>2026-03-02T01:08:13Z</DateSampleStartUTC>
     <DateSampleStopUTC>2026-03-03T00:55:56Z</DateSampleStopUTC><CountUsedMax>6</CountUsedMax>
     <CCUDevices><DevId>{d1}</DevId><DevId>{d2}</DevId></CCUDevices><Active>1</Active>
     <CountInstalled>1203</CountInstalled><Pool/></SADate>
   </Feature>
   <Feature><ID>XDT_PLT_UD</ID><UDAdminUsersReleased>3</UDAdminUsersReleased>
    <UDAdminDevicesReleased>1</UDAdminDevicesReleased>
    <SADate id="2026.0301"><DateSampleStartUTC>2026-03-02T00:00:00Z</DateSampleStartUTC>
     <DateSampleStopUTC>2026-03-03T00:00:00Z</DateSampleStopUTC><CountUsedMax>4</CountUsedMax>
     <Licensees><CountTotal>9</CountTotal><Users><Id>a</Id><Id>b</Id></Users><Devices>7</Devices></Licensees>
    </SADate>
   </Feature>
  </Inventory>
 </LicenseServer>
</Upload>
""".format(d1=_vendor("pc1"), d2=_vendor("pc2"))


def test_reads_an_upload_bundle(tmp_path: Path) -> None:
    path = tmp_path / "upload.xml"
    path.write_text(BUNDLE)
    ccu, ud = files.read(path, "acme")
    assert (ccu.server, ccu.feature, ccu.sa_date, ccu.day, ccu.count_used_max, ccu.installed, len(ccu.devices)) == (
        "lic01.corp.example", "XDT_PLT_CCU", "2026.0301", dt.date(2026, 3, 2), 6, 1203, 2)
    assert ccu.window_start == parse_ts("2026-03-02T01:08:13+00:00")
    assert (ud.ud_total, ud.ud_users, ud.ud_devices, ud.users_released, ud.devices_released) == (9, 2, 7, 3, 1)
    assert files.read(path, "acme", server="lic01")[0].server == "lic01"


def test_reads_the_same_bundle_as_json(tmp_path: Path) -> None:
    doc = {"LicenseServer": {"FQDN": "lic01", "Inventory": {"Feature": [
        {"ID": "F", "SADate": [{"id": "2026.0301", "DateSampleStartUTC": "2026-03-02T00:00:00Z",
                                "DateSampleStopUTC": "2026-03-03T00:00:00Z", "CountUsedMax": 5,
                                "CCUDevices": {"DevId": [_vendor("a"), _vendor("b")]},
                                "Licensees": {"CountTotal": 0, "Users": 0, "Devices": 0}, "CountInstalled": 10}]}]}}}
    path = tmp_path / "upload.json"
    path.write_text(json.dumps(doc))
    (s,) = files.read(path, "acme")
    assert (s.server, s.feature, s.sa_date, s.count_used_max, s.installed, s.devices) == (
        "lic01", "F", "2026.0301", 5, 10, [_vendor("a"), _vendor("b")])


def test_reads_a_usage_csv_with_or_without_servers(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("\ufeffDate,Feature,Count,Server,Devices\n2026-03-02,F,4,lic01,"
                    f"{_vendor('a')};{_vendor('b')}\n2026-03-03,F,0,,\n")
    a, b = files.read(path, "acme")
    assert (a.day, a.feature, a.count_used_max, a.server, len(a.devices), a.line) == (
        dt.date(2026, 3, 2), "F", 4, "lic01", 2, 2)
    assert (b.server, b.devices, b.window_start) == ("", [], None)


@pytest.mark.parametrize(("text", "name", "says"), [
    ("<Upload><Feature><ID>F</ID><SADate", "cut.xml", "not well-formed XML"),
    ("<Upload><Feature><SADate/></Feature></Upload>", "noid.xml", "has no ID"),
    ("<Upload><Feature><ID>F</ID><SADate><DateSampleStartUTC>2026-03-02T00:00:00Z</DateSampleStartUTC>"
     "<DateSampleStopUTC>2026-03-01T00:00:00Z</DateSampleStopUTC></SADate></Feature></Upload>", "back.xml",
     "DateSampleStartUTC before DateSampleStopUTC"),
    ("<Upload><Feature><ID>F</ID><SADate><DateSampleStartUTC>yesterday</DateSampleStartUTC></SADate></Feature>"
     "</Upload>", "when.xml", "is not a UTC time"),
    ("<Upload><Feature><ID>F</ID><SADate><DateSampleStartUTC>2026-03-02T00:00:00Z</DateSampleStartUTC>"
     "<DateSampleStopUTC>2026-03-03T00:00:00Z</DateSampleStopUTC><CountUsedMax>-3</CountUsedMax></SADate>"
     "</Feature></Upload>", "neg.xml", "CountUsedMax '-3' is not a whole number"),
    ("<Upload><Nothing/></Upload>", "empty.xml", "no figures found"),
    ('{"LicenseServer": ', "cut.json", "not valid JSON"),
    ("date,feature\n2026-03-02,F\n", "nocount.csv", "header date,feature,count"),
    ("date,feature,count\n2026-03-02,F,4\n2026-13-02,F,4\n", "date.csv", "line 3"),
    ("date,feature,count\n2026-03-02,F,many\n", "count.csv", "'many' is not a whole number"),
    ("date,feature,count\n2026-03-02,,4\n", "feature.csv", "feature is empty"),
])
def test_damaged_vendor_files_are_refused_naming_the_file_and_place(tmp_path: Path, text: str, name: str,
                                                                     says: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        files.read(path, "acme")
    assert str(path) in str(err.value) and says in str(err.value)


def test_our_xml_reads_back_as_a_vendor_file(tmp_path: Path) -> None:
    from lictel.vendor.view import VendorRow

    start = parse_ts("2026-03-02T06:00:00+00:00")
    rows = [VendorRow("acme", "lic01", "F", dt.date(2026, 3, 2), start, start + 86_400_000_000, "concurrent",
                      count_used_max=7, devices=["pc1", "PC2"], installed=20, installed_from="server",
                      sa_date="2026.0301"),
            VendorRow("acme", "lic01", "G_UD", dt.date(2026, 3, 2), start, start + 86_400_000_000, "ud",
                      ud_licensees=3, ud_users=2, ud_devices=1)]
    path = tmp_path / "ours.xml"
    path.write_text(files.to_xml(rows, "06:00 UTC", "a test -- with dashes"))
    a, b = files.read(path, "acme")
    assert (a.server, a.feature, a.day, a.window_start, a.count_used_max, a.installed, a.sa_date) == (
        "lic01", "F", dt.date(2026, 3, 2), start, 7, 20, "2026.0301")
    assert a.devices == [_vendor("pc1"), _vendor("PC2")]
    assert (b.ud_total, b.ud_users, b.ud_devices, b.installed) == (3, 2, 1, None)


def test_window_boundaries_follow_the_zone_across_a_clock_change() -> None:
    b = Boundary.parse("06:30", "Europe/Berlin")
    # 2026-03-29: clocks go forward in Berlin; that window is 23 hours long.
    wins = windows(b, dt.date(2026, 3, 28), dt.date(2026, 3, 29))
    assert [w.start for w in wins] == [parse_ts("2026-03-28T06:30:00+01:00"), parse_ts("2026-03-29T06:30:00+02:00")]
    assert wins[0].end - wins[0].start == 23 * 3600 * 10**6
    assert b.day_of(parse_ts("2026-03-29T06:29:59+02:00")) == dt.date(2026, 3, 28)
    assert b.day_of(parse_ts("2026-03-29T06:30:00+02:00")) == dt.date(2026, 3, 29)
    assert Boundary.parse("00:00").label() == "00:00 UTC"
    for bad in ("24:00", "6", "06:5", "noon"):
        with pytest.raises(ConfigError, match="--window-start"):
            Boundary.parse(bad)
    with pytest.raises(ConfigError, match="--window-tz"):
        Boundary.parse("00:00", "Mars/Olympus")
