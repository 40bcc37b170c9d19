"""The vendor's view end to end: a scenario through `lictel run` (real Tansu, two Faust workers, chDB),
then `report vendor-view`, `ids`, `vendor import` and `report vendor-diff` as a user runs them.

The reference below is written from the definitions in docs/vendor-view.md alone, on the generated
events, without lictel's engine, holdings or user/device code: a plain replay of open checkouts
instant by instant, and the vendor's 90-day rule by brute force.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration

DAYS = [dt.date(2026, 3, 2) + dt.timedelta(days=k) for k in range(4)]
CCU, UD = "XDT_PLT_CCU", "XDT_PLT_UD"
RULE = {CCU: "UH", UD: "NONE"}


def _ts(day: dt.date, seconds: int) -> int:
    """Seconds since the epoch of ``seconds`` after midnight UTC of ``day``."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) + seconds


def scenario(seed: int = 12) -> list[dict[str, Any]]:
    """Two servers, four days: users with a home PC who sometimes open a second session on it (one
    license under UH), two-license checkouts checked in one license at a time, sessions across
    midnight, a shared kiosk, a roaming user, mixed-case and domain-qualified names, a daemon
    restart (with check-ins after it that are orphans), a reread and denials."""
    rng = random.Random(seed)
    raw: list[tuple[int, str, dict[str, Any]]] = []

    def ev(server: str, t: int, action: str, feature: str | None, user: str | None, host: str | None,
           count: int = 1, handle: str | None = None) -> None:
        raw.append((t, server, {"org": "acme", "server": server, "vendor": "CITRIX", "feature": feature,
                                "action": action, "user": user, "host": host, "handle": handle, "count": count,
                                "reason": "Licensed number of users already reached. (-4,342)"
                                if action == "DENIED" else None}))

    for server in ("lic01", "lic02"):
        for day in DAYS:
            for u in range(40):
                user = f"u{u:03d}" if u % 13 else f"U{u:03d}"  # some names differ only in case
                if u == 7:
                    user = "CORP\\u007"
                host = f"pc-{u:03d}" if u % 11 else f"PC-{u:03d}"
                if rng.random() < 0.25:
                    continue
                start = rng.randrange(7 * 3600, 17 * 3600)
                length = rng.randrange(600, 5 * 3600)
                n = 2 if rng.random() < 0.15 else 1
                ev(server, _ts(day, start), "OUT", CCU, user, host, n)
                if n == 2:
                    ev(server, _ts(day, start + length // 2), "IN", CCU, user, host, 1)
                    ev(server, _ts(day, start + length), "IN", CCU, user, host, 1)
                else:
                    ev(server, _ts(day, start + length), "IN", CCU, user, host)
                if rng.random() < 0.3:  # a second session on the same PC: one license under UH
                    s2 = start + rng.randrange(60, 1800)
                    ev(server, _ts(day, s2), "OUT", CCU, user, host)
                    ev(server, _ts(day, s2 + rng.randrange(60, 3600)), "IN", CCU, user, host)
                if u < 12 and rng.random() < 0.6:  # user/device licenses
                    t = _ts(day, rng.randrange(8 * 3600, 18 * 3600))
                    ev(server, t, "OUT", UD, user, host)
                    ev(server, t + 900, "IN", UD, user, host)
            for k, user in enumerate(("kiosk-a", "kiosk-b")):  # an exclusively shared device
                t = _ts(day, 9 * 3600 + k * 7200)
                ev(server, t, "OUT", UD, user, "kiosk01")
                ev(server, t + 600, "IN", UD, user, "kiosk01")
            roam = _ts(day, 13 * 3600)  # one user on two devices
            ev(server, roam, "OUT", UD, "rover", "lab-1")
            ev(server, roam + 60, "IN", UD, "rover", "lab-1")
            ev(server, roam + 120, "OUT", UD, "rover", "lab-2")
            ev(server, roam + 180, "IN", UD, "rover", "lab-2")
            night = _ts(day, 22 * 3600 + rng.randrange(3600))  # held across midnight
            ev(server, night, "OUT", CCU, "nightly", "batch-01")
            ev(server, night + 4 * 3600, "IN", CCU, "nightly", "batch-01")
            ev(server, _ts(day, 10 * 3600 + 5), "DENIED", CCU, "late", "pc-999")
    # lic02: a burst at 03:00 on the second day, so windows starting 06:00 see other peaks.
    for k in range(30):
        ev("lic02", _ts(DAYS[1], 3 * 3600 + k), "OUT", CCU, f"burst{k}", f"bpc{k}")
        ev("lic02", _ts(DAYS[1], 4 * 3600 + k), "IN", CCU, f"burst{k}", f"bpc{k}")
    # lic02 went live a day before lic01: its windows start a day earlier (a view that asks for all
    # servers at once keeps each server's own windows), and its 90-day user/device windows carry
    # that day's users.
    early = DAYS[0] - dt.timedelta(days=1)
    for k, (user, host) in enumerate((("u003", "pc-003"), ("u006", "pc-006"), ("early-bird", "pc-early"))):
        ev("lic02", _ts(early, 10 * 3600 + k * 600), "OUT", UD, user, host)
        ev("lic02", _ts(early, 10 * 3600 + k * 600 + 300), "IN", UD, user, host)
    ev("lic02", _ts(early, 11 * 3600), "OUT", CCU, "early-bird", "pc-early")
    ev("lic02", _ts(early, 12 * 3600), "IN", CCU, "early-bird", "pc-early")
    ev("lic01", _ts(DAYS[2], 12 * 3600), "RESTART", None, None, None)
    ev("lic02", _ts(DAYS[1], 11 * 3600), "REREAD", None, None, None)
    raw.sort(key=lambda x: (x[1], x[0]))
    lines = []
    seq: dict[str, int] = defaultdict(int)
    for t, server, e in raw:
        seq[server] += 1
        stamp = f"{dt.datetime.fromtimestamp(t, dt.UTC):%Y-%m-%dT%H:%M:%S}Z"
        lines.append({"event_id": f"{server}:log:{seq[server]}", "ts": stamp, **e, "source": f"{server}:log",
                      "seq": seq[server]})
    return lines


# --------------------------------------------------------------------------- the reference


def _user(name: str) -> str:
    return name.rsplit("\\", 1)[-1].split("@", 1)[0].lower()


def reference(lines: list[dict[str, Any]], start_s: int = 0, installed: dict[tuple[str, str], int] | None = None
              ) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
    """(server, feature, day) -> (count_used_max, ccu_devices, ud_licensees, installed), windows
    starting ``start_s`` seconds after midnight UTC, over the days each server has events."""
    installed = installed or {}
    out: dict[tuple[str, str, str], tuple[int, int, int, int]] = {}
    by_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in lines:
        by_server[x["server"]].append(x)
    for server, evs in by_server.items():
        evs.sort(key=lambda x: (x["ts"], x["seq"]))
        times = [int(dt.datetime.fromisoformat(x["ts"]).timestamp()) for x in evs]

        def wday(t: int) -> dt.date:
            return dt.datetime.fromtimestamp(t - start_s, dt.UTC).date()

        days = [wday(times[0]) + dt.timedelta(days=k) for k in range((wday(times[-1]) - wday(times[0])).days + 1)]
        opened: dict[tuple[str, ...], list[int]] = defaultdict(list)
        peak: dict[tuple[str, dt.date], int] = defaultdict(int)
        hosts: dict[tuple[str, dt.date], set[str]] = defaultdict(set)

        def observe(day: dt.date, opened: dict[tuple[str, ...], list[int]] = opened,
                    peak: dict[tuple[str, dt.date], int] = peak,
                    hosts: dict[tuple[str, dt.date], set[str]] = hosts) -> None:
            level: dict[str, dict[tuple[str, ...], int]] = defaultdict(dict)
            for ident, counts in opened.items():
                if not counts:
                    continue
                f = ident[0]
                group = (ident[1], ident[2]) if RULE[f] == "UH" else ident
                level[f][group] = max([level[f].get(group, 0), *counts]) if RULE[f] == "UH" else sum(counts)
                hosts[(f, day)].add(ident[2].lower())
            for f, groups in level.items():
                peak[(f, day)] = max(peak[(f, day)], sum(groups.values()))

        i = 0
        for day in days:
            observe(day)  # what is carried into the window
            end = _ts(day + dt.timedelta(days=1), start_s)
            while i < len(evs) and times[i] < end:
                t = times[i]
                while i < len(evs) and times[i] == t:  # one instant: every event at once
                    x = evs[i]
                    ident = (x["feature"], x["user"], x["host"], x["handle"] or "")
                    if x["action"] == "OUT":
                        opened[ident].append(x["count"])
                    elif x["action"] == "IN":
                        n = x["count"]
                        while n and opened[ident]:
                            take = min(n, opened[ident][0])
                            opened[ident][0] -= take
                            n -= take
                            if not opened[ident][0]:
                                opened[ident].pop(0)
                    elif x["action"] == "RESTART":
                        opened.clear()
                    i += 1
                observe(day)
        pairs: dict[dt.date, set[tuple[str, str]]] = defaultdict(set)
        for x, t in zip(evs, times, strict=True):
            if x["action"] == "OUT" and x["feature"] == UD:
                pairs[wday(t)].add((_user(x["user"]), x["host"].lower()))
        for day in days:
            seen = set().union(*(pairs[day - dt.timedelta(days=k)] for k in range(90)))
            devices_of: dict[str, set[str]] = defaultdict(set)
            users_of: dict[str, set[str]] = defaultdict(set)
            for u, d in seen:
                devices_of[u].add(d)
                users_of[d].add(u)
            shared = {d for d, us in users_of.items() if len(us) >= 2 and all(len(devices_of[u]) == 1 for u in us)}
            rule = len(shared) + sum(1 for u in devices_of if not devices_of[u] <= shared)
            for f in (CCU, UD):
                out[(server, f, day.isoformat())] = (peak[(f, day)], len(hosts[(f, day)]) if f == CCU else 0,
                                                     rule if f == UD else 0, installed.get((server, f), 0))
    return out


# --------------------------------------------------------------------------- the test


LICENSE = """SERVER this_host ANY
VENDOR CITRIX
INCREMENT XDT_PLT_CCU CITRIX 2026.0301 01-jan-2027 50 DUP_GROUP=UH SIGN="00"
INCREMENT XDT_PLT_CCU CITRIX 2025.1101 01-jan-2027 5 DUP_GROUP=UH SIGN="01"
"""
CONTRACT = ("feature,count,start,expiry,vendor,note\nXDT_PLT_CCU,80,2026-01-01,,CITRIX,\n"
            "XDT_PLT_UD,40,2026-01-01,,CITRIX,\n")
INSTALLED = {("lic01", CCU): 55, ("lic01", UD): 40, ("lic02", CCU): 80, ("lic02", UD): 40}


def _csv_rows(text: str) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == ["server", "feature", "day", "count_used_max", "ccu_devices", "ud_licensees",
                                 "installed"]
    return {(r["server"], r["feature"], r["day"]): (int(r["count_used_max"]), int(r["ccu_devices"]),
                                                    int(r["ud_licensees"]), int(r["installed"])) for r in reader}


def scramble(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(hashlib.sha256(text.encode(encoding)).digest()[:16]).decode()


@pytest.fixture(scope="module")
def estate() -> list[dict[str, Any]]:
    return scenario()


def test_vendor_view_equals_an_independent_computation(lictel: Lictel, tmp_path: Path,
                                                       estate: list[dict[str, Any]]) -> None:
    lines = [dict(x) for x in estate]
    shuffled = sorted(lines + random.Random(5).sample(lines, 200),  # disorder within 40 s, some twice
                      key=lambda x: dt.datetime.fromisoformat(x["ts"]).timestamp() + random.Random(x["event_id"])
                      .randrange(40))
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in shuffled))
    lic, contract = tmp_path / "lic01.lic", tmp_path / "contract.csv"
    lic.write_text(LICENSE)
    contract.write_text(CONTRACT)
    lictel("entitlements", "import", str(lic), "--server", "lic01")
    lictel("entitlements", "import", str(contract))
    lictel("run", "--jsonl", str(path), "--workers", "2")
    want = reference(lines, installed=INSTALLED)
    got = _csv_rows(lictel("report", "vendor-view", "--format", "csv").stdout)
    assert got == want
    assert min(d for s, _, d in got if s == "lic02") < min(d for s, _, d in got if s == "lic01")
    one_by_one = {}
    for server in ("lic01", "lic02"):
        one_by_one |= _csv_rows(lictel("report", "vendor-view", "--format", "csv", "--server", server).stdout)
    assert one_by_one == got
    assert sum(w[0] for w in want.values()) > 0 and sum(w[2] for w in want.values()) > 0
    # Windows that start at 06:00 UTC: the same definitions over other days.
    shifted = _csv_rows(lictel("report", "vendor-view", "--format", "csv", "--window-start", "06:00").stdout)
    assert shifted == reference(lines, 6 * 3600, INSTALLED)
    assert shifted != got

    # The table names the rule and the SA date of the installed licenses; XML carries the upload's names.
    detail = list(csv.DictReader(io.StringIO(lictel("report", "vendor-view", "--format", "csv", "--detail",
                                                    "--server", "lic01", "--feature", CCU).stdout)))
    assert {(r["dup_group"], r["sa_date"], r["installed_from"]) for r in detail} == {("UH", "2026.0301", "server")}
    assert all(int(r["checkouts_max"]) >= int(r["count_used_max"]) for r in detail)
    assert any(int(r["checkouts_max"]) > int(r["count_used_max"]) for r in detail)
    xml = lictel("report", "vendor-view", "--format", "xml").stdout
    for name in ("<FQDN>lic01</FQDN>", "<ID>XDT_PLT_CCU</ID>", '<SADate id="2026.0301">', "<CountUsedMax>",
                 "<DateSampleStartUTC>2026-03-02T00:00:00Z</DateSampleStartUTC>", "<DevId>", "<CountInstalled>55<"):
        assert name in xml, name
    assert scramble("pc-001") in xml and "pc-001" not in xml  # devices leave only scrambled

    # Our own upload, imported as the vendor's file, agrees with us everywhere.
    ours = tmp_path / "ours.xml"
    ours.write_text(xml)
    lictel("vendor", "import", str(ours))
    same = json.loads(lictel("report", "vendor-diff", "--format", "json").stdout)
    assert same["rows"] == [], same["rows"][:3]
    assert re.search(r"(\d+) figure\(s\) compared, \1 agree", same["notes"][0])

    # A vendor file that differs in known ways: each difference names its cause.
    mine = {(r["server"], r["feature"], r["day"]): r for r in detail}
    dup_day = next(k for k, r in sorted(mine.items()) if int(r["checkouts_max"]) > int(r["count_used_max"]))
    window_day = next(d for d in DAYS[:-1] if want[("lic02", CCU, d.isoformat())][0]
                      != reference(lines, 6 * 3600)[("lic02", CCU, d.isoformat())][0])
    shifted_value = reference(lines, 6 * 3600)[("lic02", CCU, window_day.isoformat())][0]
    text = xml.replace("<FQDN>lic01</FQDN>", "<FQDN>LIC01.corp.example</FQDN>")
    text = _edit_sample(text, "lic01.corp", CCU, dup_day[2], count=int(mine[dup_day]["checkouts_max"]),
                        extra_device=scramble("never-seen-pc"))
    text = _edit_sample(text, "lic02", CCU, window_day.isoformat(), count=shifted_value, start="06:00:00")
    text = text.replace("</LicenseServers>", f"""<LicenseServer><FQDN>lic09.corp.example</FQDN><Inventory><Feature>
      <ID>{CCU}</ID><SADate id="2026.0301"><DateSampleStartUTC>2026-03-03T00:00:00Z</DateSampleStartUTC>
      <DateSampleStopUTC>2026-03-04T00:00:00Z</DateSampleStopUTC><CountUsedMax>7</CountUsedMax></SADate>
      </Feature></Inventory></LicenseServer></LicenseServers>""")
    theirs = tmp_path / "vendor-upload.xml"
    theirs.write_text(text)
    lictel("vendor", "import", str(theirs))
    listed = lictel("vendor", "list", "--format", "csv").stdout
    assert str(theirs) in listed and str(ours) in listed
    diff = json.loads(lictel("report", "vendor-diff", "--format", "json").stdout)
    rows = [r for r in diff["rows"] if r["origin"] == str(theirs)]
    causes = {(r["our_server"], r["day"], r["figure"]): r["explanation"] for r in rows}
    assert "DUP_GROUP: the vendor counts every checkout" in causes[("lic01", dup_day[2], "count_used_max")]
    assert "match no device we have seen" in causes[("lic01", dup_day[2], "ccu_devices")]
    window = causes[("lic02", window_day.isoformat(), "count_used_max")]
    assert "a different window boundary" in window and "ours agrees" in window
    assert "a server we do not ingest" in causes[("", "2026-03-03", "count_used_max")]
    assert not [r for r in rows if r["explanation"].startswith("unexplained")]
    assert {(r["our_server"], r["figure"]) for r in rows} == {
        ("lic01", "count_used_max"), ("lic01", "ccu_devices"), ("lic02", "count_used_max"), ("", "count_used_max")}

    # The same file compared without importing it, as a usage CSV without servers: the estate.
    vcsv = tmp_path / "vendor.csv"
    vcsv.write_text("date,feature,count\n2026-03-02,XDT_PLT_CCU,1\n")
    est = lictel("report", "reconcile-vendor", str(vcsv), "--format", "csv").stdout
    assert est.splitlines()[1].startswith("(estate),(estate),XDT_PLT_CCU,2026-03-02,count_used_max,1,")

    # Scrambled identities: the documented algorithm, and ours found among the vendor's IDs.
    table = lictel("ids", "scramble", "u001", "CORP\\u007", "--format", "csv").stdout
    assert f"u001,as written,utf-8,{scramble('u001')}" in table
    assert f"CORP\\u007,as written,utf-8,{scramble('CORP' + chr(92) + 'u007')}" in table
    forms = lictel("ids", "scramble", "CORP\\u007", "--all-forms", "--format", "csv").stdout
    assert scramble("U007", "utf-16le") in forms and scramble("u007@CORP") in forms
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([scramble("U007", "utf-16le"), scramble("PC-001".lower()), scramble("kiosk01"),
                              scramble("nobody-here"), "not an id"]) + "\n")
    found = {r["scrambled"]: r for r in json.loads(lictel("ids", "match", str(ids), "--format", "json").stdout)["rows"]}
    assert len(found) == 4
    assert (found[scramble("U007", "utf-16le")]["name"], found[scramble("U007", "utf-16le")]["form"],
            found[scramble("U007", "utf-16le")]["encoding"]) == ("CORP\\u007", "bare name, upper case", "utf-16le")
    assert found[scramble("pc-001")]["kind"] == "device" and found[scramble("kiosk01")]["name"] == "kiosk01"
    assert found[scramble("nobody-here")]["name"] == "(no match)"


def _edit_sample(xml: str, server: str, feature: str, day: str, count: int, extra_device: str | None = None,
                 start: str | None = None) -> str:
    """Change one SADate sample of our XML: its CountUsedMax, a device added, its window moved."""
    at = xml.index(f"<FQDN>{server}") if f"<FQDN>{server}" in xml else xml.lower().index(f"<fqdn>{server}")
    f_at = xml.index(f"<ID>{feature}</ID>", at)
    s_at = xml.index(f"<DateSampleStartUTC>{day}T", f_at)
    end = xml.index("</SADate>", s_at)
    block = xml[s_at:end]
    block = re.sub(r"<CountUsedMax>\d+</CountUsedMax>", f"<CountUsedMax>{count}</CountUsedMax>", block)
    if extra_device:
        block = block.replace("<CCUDevices>", f"<CCUDevices><DevId>{extra_device}</DevId>", 1)
    if start:
        nxt = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
        block = block.replace(f"{day}T00:00:00Z", f"{day}T{start}Z").replace(f"{nxt}T00:00:00Z", f"{nxt}T{start}Z")
    return xml[:s_at] + block + xml[end:]
