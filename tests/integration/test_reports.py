"""Every report on a small hand-built estate in real chDB, against hand-computed expectations.

The estate (org acme, server lic01, UTC; 2026-03-02 is a Monday):
- F_CCU (concurrent, 2 licenses): ann 09:00-11:00, bob 10:00-10:30, cat 10:10-10:20, dan 10:20-10:50 on
  Monday; dan was denied at 10:15 and got a license 5 minutes later; eve was denied on Tuesday 14:00 and
  never got one; gus checked out Tuesday 01:00 and never checked in. Use: 1 (09:00), 2 (10:00),
  3 (10:10-10:30), 2 (10:30), 1 (10:50), 0 (11:00); Tuesday 1 from 01:00.
- F_UD (user/device, 1 license): ann on 2026-01-05, bob on 2026-03-02.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.entitlements import parse_contract_csv, store
from lictel.events import Event
from lictel.identity import SQL_USER, normalize_user
from lictel.render.svg import svg as render_svg
from lictel.reports.chargeback import chargeback
from lictel.reports.common import HourOfWeekChart, Scope
from lictel.reports.denials import denials
from lictel.reports.dormant import dormant
from lictel.reports.forecast import backtest, fit_trend
from lictel.reports.heatmap import heatmap
from lictel.reports.overuse import overuse
from lictel.reports.sizing import sizing
from lictel.reports.usage import usage
from lictel.timeutil import parse_ts
from lictel.vendor.diff import vendor_diff
from lictel.vendor.files import Sample
from lictel.warehouse import connect, migrate
from sinks.clickhouse import RAW_COLUMNS, write_minute_rows
from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration
DB = "lictel"
MON, WED = parse_ts("2026-03-02T00:00:00Z"), parse_ts("2026-03-04T00:00:00Z")
TWO_DAYS = Scope("acme", None, MON, WED)


def _events() -> list[Event]:
    spec = [
        ("2026-03-02T09:00", "OUT", "ann", "pc1", "F_CCU"), ("2026-03-02T10:00", "OUT", "bob", "pc2", "F_CCU"),
        ("2026-03-02T10:10", "OUT", "cat", "pc3", "F_CCU"), ("2026-03-02T10:15", "DENIED", "CORP\\Dan", "pc4", "F_CCU"),
        ("2026-03-02T10:20", "IN", "cat", "pc3", "F_CCU"), ("2026-03-02T10:20", "OUT", "dan", "pc4", "F_CCU"),
        ("2026-03-02T10:30", "IN", "bob", "pc2", "F_CCU"), ("2026-03-02T10:50", "IN", "dan", "pc4", "F_CCU"),
        ("2026-03-02T11:00", "IN", "ann", "pc1", "F_CCU"), ("2026-03-03T01:00", "OUT", "gus", "pc7", "F_CCU"),
        ("2026-03-03T14:00", "DENIED", "eve", "pc5", "F_CCU"),
        ("2026-01-05T09:00", "OUT", "ann", "pc1", "F_UD"), ("2026-01-05T09:30", "IN", "ann", "pc1", "F_UD"),
        ("2026-03-02T08:00", "OUT", "bob", "pc2", "F_UD"), ("2026-03-02T08:30", "IN", "bob", "pc2", "F_UD"),
    ]
    return [Event(f"lic01:log:{i}", parse_ts(f"{ts}:00Z"), "acme", "lic01", "CITRIX", f, action, user, host, None, 1,
                  "Licensed number of users already reached" if action == "DENIED" else None, "lic01:log", i)
            for i, (ts, action, user, host, f) in enumerate(spec)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reports")
    settings = Settings(data_dir=path)
    client = connect(settings)
    try:
        migrate(client, settings)
        events = _events()
        client.insert(f"{DB}.raw_events", [[getattr(e, c) for c in RAW_COLUMNS] for e in events],
                      column_names=RAW_COLUMNS)
        write_minute_rows(client, DB, compute_rows(sorted(events, key=lambda e: (e.ts, e.seq))), version=1)
        store(client, DB, parse_contract_csv("feature,count,start,expiry,vendor,note\n"
                                             "F_CCU,2,2026-01-01,2026-12-31,CITRIX,\nF_UD,1,2026-01-01,,CITRIX,\n",
                                             org="acme", source="contract.csv"))
    finally:
        client.close()
    return path


@pytest.fixture
def client(data_dir: Path) -> Iterator[object]:
    c = connect(Settings(data_dir=data_dir))
    yield c
    c.close()


def test_usage_by_day(client: object) -> None:
    rep = usage(client, DB, Scope("acme", "F_CCU", MON, WED), granularity="day")
    # Monday: 190 license-minutes (60 + 10*2 + 20*3 + 20*2 + 10*1); Tuesday: gus 01:00-14:01.
    assert rep.rows == [["acme", "(estate)", "F_CCU", "2026-03-02T00:00:00Z", 3, 0, 0.131944, round(190 / 60, 6)],
                        ["acme", "(estate)", "F_CCU", "2026-03-03T00:00:00Z", 1, 0, 0.542361, round(781 / 60, 6)]]
    weeks = usage(client, DB, Scope("acme", "F_CCU", MON, WED), granularity="week").rows
    assert weeks == [["acme", "(estate)", "F_CCU", "2026-03-02T00:00:00Z", 3, 0, round(971 / 10080, 6),
                      round(971 / 60, 6)]]


def test_sizing_and_histogram(client: object) -> None:
    rep = sizing(client, DB, Scope("acme", "F_CCU", MON, WED))
    # The minutes from F_CCU's first stored minute (Mon 09:00) to its last (Tue 14:00): 1741, of them
    # 20 at 3, 30 at 2, 851 at 1, the rest at 0.
    assert rep.rows == [["acme", "(estate)", "F_CCU", 1741, 2, 1, 3, 3, round((851 + 60 + 60) / 1741, 3), "NONE",
                         "2026-03-02T09:00:00Z", "2026-03-03T14:01:00Z"]]
    hist = {r[3]: r[4] for r in rep.parts[0].rows if r[4]}
    assert hist == {"0%": 1741 - 901, "40-50%": 851, "90-100%": 30, ">100%": 20}
    # A requested range far wider than the data gives the same figures, never a percentile of nothing.
    wide = sizing(client, DB, Scope("acme", "F_CCU", parse_ts("2000-01-01T00:00:00Z"),
                                    parse_ts("2030-01-01T00:00:00Z")))
    assert wide.rows == rep.rows


def test_overuse_periods_and_band(client: object) -> None:
    rep = overuse(client, DB, TWO_DAYS, {})
    assert rep.rows == [
        ["acme", "F_CCU", "concurrent", "2026-03-02T10:10:00Z", "2026-03-02T10:30:00Z", 20, 3, 2, 1, 0, 20, "overuse"],
        # F_UD: on 2026-03-02 the 90 days hold ann (Jan 5) and bob: 2 licenses assigned, 1 entitled.
        ["acme", "F_UD", "user/device", "2026-03-02", "2026-03-03", 1, 2, 1, 1, 0, 1, "overuse"]]


def test_overuse_answers_a_page_at_a_time_over_http(data_dir: Path) -> None:
    import threading
    import time
    import urllib.request

    import uvicorn

    from lictel.api import Warehouse, create_app
    from lictel.broker import free_port

    settings = Settings(data_dir=data_dir)
    c = connect(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(Warehouse(c, settings), [], pages=False), host="127.0.0.1",
                                           port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        url: str | None = f"http://127.0.0.1:{server.config.port}/api/v1/overuse?org=acme&from=2026-03-02&to=2026-03-04&limit=1"
        pages = []
        while url:
            with urllib.request.urlopen(url, timeout=30) as r:
                pages.append(json.loads(r.read())["rows"])
                link = r.headers.get("Link")
            url = link[1:link.index(">")] if link else None
        assert [[(row["feature"], row["start"]) for row in page] for page in pages] == [
            [("F_CCU", "2026-03-02T10:10:00Z")], [("F_UD", "2026-03-02")]]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.config.port}/api/v1/overuse?org=acme&from=2026-03-02"
                                    f"&to=2026-03-04&offset=1&format=csv", timeout=30) as r:
            assert r.headers.get("Link") is None and r.read().decode().splitlines()[1].startswith("acme,F_UD,")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        c.close()


def test_denials_true_and_by_user(client: object) -> None:
    rep = denials(client, DB, TWO_DAYS)
    assert rep.rows == [["acme", "F_CCU", 2, 1, "Licensed number of users already reached"]]
    by_user = denials(client, DB, TWO_DAYS, by="user").rows
    # CORP\Dan is dan, who got a license 5 minutes later; eve never did.
    assert [r[:5] for r in by_user] == [["acme", "F_CCU", "dan", 1, 0], ["acme", "F_CCU", "eve", 1, 1]]
    assert [r[3] for r in denials(client, DB, TWO_DAYS, by="user", within_min=4).rows] == [1, 1]


def test_dormant_releasable_and_phantom(client: object) -> None:
    rep = dormant(client, DB, Scope("acme"), {}, days=30, held_hours=12)
    kinds = {(r[0], r[3]): r for r in rep.rows}
    assert kinds[("releasable", "ann")][5:] == ["2026-01-05", 56, 1]
    assert kinds[("releasable", "pc1")][5:] == ["2026-01-05", 56, 1]
    assert ("releasable", "bob") not in kinds
    phantom = kinds[("phantom", "gus@pc7")]
    assert phantom[4] == "server lic01; never checked in (still held at the end of the data)"
    assert phantom[6:] == [round(13 / 24, 2), 1]
    # ann's two-hour checkout ended with a check-in: long use, not a phantom, however short the limit.
    short = dormant(client, DB, Scope("acme"), {}, held_hours=1)
    assert {r[3] for r in short.rows if r[0] == "phantom"} == {"gus@pc7"}
    # Over F_CCU's stored minutes (Mon 09:00 - Tue 14:01) the 99th percentile is 3, of 2 entitled.
    assert not [r for r in rep.rows if r[0] == "oversized"]
    assert [r[0] for r in dormant(client, DB, Scope("acme"), {}, ratio=1.4).rows].count("oversized") == 0
    assert [r[0] for r in dormant(client, DB, Scope("acme"), {}, ratio=1.6).rows].count("oversized") == 1


def test_heatmap_hour_of_week(client: object) -> None:
    rep = heatmap(client, DB, Scope("acme", "F_CCU", MON, WED))
    # One 7 x 24 grid of averages (rows: weekdays; columns h00..h23), then one of peaks.
    assert [r[2] for r in rep.rows] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert rep.columns[3:] == [f"h{h:02d}" for h in range(24)]
    avg = {(r[2], h): v for r in rep.rows for h, v in enumerate(r[3:])}
    peak = {(r[2], h): v for r in rep.parts[0].rows for h, v in enumerate(r[3:])}
    assert (avg[("Mon", 10)], peak[("Mon", 10)]) == (round(130 / 60, 2), 3)
    assert (avg[("Mon", 9)], peak[("Mon", 9)]) == (1.0, 1)
    assert (avg[("Tue", 14)], peak[("Tue", 14)]) == (round(1 / 60, 2), 1) and avg[("Sun", 3)] == 0.0
    chart = rep.charts["acme-F_CCU"]
    assert isinstance(chart, HourOfWeekChart)  # data; the rendering layer draws it
    assert (round(chart.grid[(0, 10)][0], 2), chart.grid[(0, 10)][1]) == (avg[("Mon", 10)], peak[("Mon", 10)])
    svg = render_svg(chart)
    assert svg.startswith("<svg") and svg.count("<rect") == 168
    # In the site's zone (Berlin is UTC+1 in March) the same use falls an hour later.
    berlin = heatmap(client, DB, Scope("acme", "F_CCU", MON, WED, "Europe/Berlin"))
    local = {(r[2], h): v for r in berlin.parts[0].rows for h, v in enumerate(r[3:])}
    assert (local[("Mon", 11)], local[("Mon", 10)], local[("Mon", 9)]) == (3, 1, 0)


def test_reports_speak_of_the_sites_days_and_hours(client: object) -> None:
    # New York is UTC-5 on 2 March: gus's checkout at Tuesday 01:00 UTC is Monday 20:00 there.
    scope = Scope("acme", "F_CCU", None, None, "America/New_York")
    days = usage(client, DB, scope, granularity="day")
    assert days.columns[3] == "day"
    assert [(r[3], r[4]) for r in days.rows] == [("2026-03-02T00:00:00-05:00", 3), ("2026-03-03T00:00:00-05:00", 1)]
    # Monday (local) holds ann..dan's 190 license-minutes and gus's 4 hours until local midnight.
    assert days.rows[0][7] == round((190 + 240) / 60, 6)
    hours = denials(client, DB, scope, by="hour")
    assert [r[2] for r in hours.rows] == ["2026-03-02T05:00:00-05:00", "2026-03-03T09:00:00-05:00"]


def test_chargeback_by_group(client: object, tmp_path: Path) -> None:
    groups = {"ann": "eng", "bob": "eng", "cat": "ops", "dan": "ops"}
    rep = chargeback(client, DB, Scope("acme", "F_CCU", MON, WED), groups)
    got = {r[2]: r[3:8] for r in rep.rows}
    total = 2.5 + 1 / 6 + 0.5 + 23  # gus holds from Tuesday 01:00 to the end of the range
    assert got["eng"] == [2.5, round(2.5 / total, 6), 2, round(2 / 3, 6), 3]
    assert got["ops"] == [round(2 / 3, 4), round((2 / 3) / total, 6), 1, round(1 / 3, 6), 3]
    assert got["(unmapped)"][:3] == [23.0, round(23 / total, 6), 0]
    assert {r[8] for r in rep.rows} == {"2026-03-02T10:10:00Z"}


def test_reconcile_vendor_lists_differences_with_evidence(client: object) -> None:
    vendor = [Sample("acme", "v.csv", line, "csv", "", f, "", day, count_used_max=n)
              for day, f, n, line in ((dt.date(2026, 3, 2), "F_CCU", 3, 2), (dt.date(2026, 3, 3), "F_CCU", 2, 3),
                                      (dt.date(2026, 3, 2), "F_UD", 2, 4))]
    rep = vendor_diff(client, DB, "acme", vendor, {})
    assert rep.rows == [["(estate)", "(estate)", "F_CCU", "2026-03-03", "count_used_max", 2, 1, 1,
                         "estate peak 1 at 2026-03-03T01:00:00Z", "v.csv:3"]]
    assert "3 figure(s) compared, 2 agree within 0" in rep.notes[0]
    assert vendor_diff(client, DB, "acme", vendor, {}, tolerance=1).rows == []


def test_forecast_backtest_on_simulated_growth() -> None:
    rng = random.Random(1)
    start = dt.date(2025, 1, 6)
    weekday = [10, 12, 12, 11, 9, -25, -29]  # busy weekdays, quiet weekend
    series = [(start + dt.timedelta(days=k), 100 + 0.2 * k + weekday[(start + dt.timedelta(days=k)).weekday()]
               + rng.gauss(0, 2)) for k in range(240)]
    fit = fit_trend(series)
    assert abs(fit.slope - 0.2) < 0.02
    assert abs(fit.weekday[5] - weekday[5]) < 1.5
    bt = backtest(series)
    assert bt is not None and bt[0] < 3 and bt[1] < 3  # MAE in licenses, MAPE in %


def test_cli_formats_and_compliance(data_dir: Path, tmp_path: Path) -> None:
    lictel = Lictel(data_dir, {**os.environ, "LICTEL_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    sizing_csv = lictel("report", "sizing", "--format", "csv", "--feature", "F_CCU", "--from", "2026-03-02",
                        "--to", "2026-03-04").stdout
    assert sizing_csv.splitlines() == ["org,server,feature,minutes,entitlement,cover_95,cover_99,cover_100,mean,"
                                       "dup_group,from,to", "acme,(estate),F_CCU,1741,2,1,3,3,0.558,NONE,"
                                       "2026-03-02T09:00:00Z,2026-03-03T14:01:00Z"]
    doc = json.loads(lictel("report", "denials", "--format", "json", "--by", "hour").stdout)
    assert [(r["hour"], r["true_denials"]) for r in doc["rows"]] == [("2026-03-02T10:00:00Z", 0),
                                                                      ("2026-03-03T14:00:00Z", 1)]
    vendor = tmp_path / "vendor.csv"
    vendor.write_text("date,feature,count\n2026-03-03,F_CCU,2\n2026-03-0x,F_CCU,2\n")
    bad = lictel("report", "reconcile-vendor", str(vendor), check=False)
    assert bad.returncode == 2 and f"line 3 of {vendor}" in bad.stderr and "'date'" in bad.stderr
    groups = tmp_path / "groups.csv"
    groups.write_text("user,group\nCORP\\ann,eng\n")
    assert "eng" in lictel("report", "chargeback", str(groups), "--format", "csv").stdout
    charts = tmp_path / "charts"
    lictel("report", "heatmap", "--chart-dir", str(charts), "--format", "csv")
    assert sorted(p.name for p in charts.iterdir()) == ["heatmap-acme-F_CCU.svg", "heatmap-acme-F_UD.svg"]

    page = tmp_path / "report.html"
    lictel("report", "compliance", "--from", "2026-03-02", "--to", "2026-03-04", "-o", str(page))
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 4 and ">bob<" in html
    assert "src=" not in html and "href=" not in html  # self-contained
    refused = lictel("report", "compliance", "--from", "2026-03-02", "--to", "2026-03-04", "--pseudonymize",
                     check=False)
    assert refused.returncode == 2 and "LICTEL_PSEUDONYM_KEY" in refused.stderr
    lictel.env["LICTEL_PSEUDONYM_KEY"] = "s3cret"
    kept = lictel("report", "compliance", "--from", "2026-03-02", "--to", "2026-03-04", "--pseudonymize", "-o",
                  str(page), check=False)
    assert kept.returncode != 0 and "exists: give --force" in kept.stderr and page.read_text() == html
    lictel("report", "compliance", "--from", "2026-03-02", "--to", "2026-03-04", "--pseudonymize", "-o", str(page),
           "--force")
    masked = page.read_text()
    assert ">bob<" not in masked and ">ann<" not in masked and ">p-" in masked
    again = lictel("report", "compliance", "--from", "2026-03-02", "--to", "2026-03-04", "--pseudonymize",
                   "--format", "json").stdout
    assert json.loads(again)["rows"][0]["feature"] == "F_CCU"
    # Every field that can hold a name is pseudonymised from one normalisation: reasons keep only
    # their error code, and one person has one pseudonym in every table.
    from lictel.reports.pseudonyms import Pseudonyms

    doc = json.loads(again)
    reasons = [r["top_reasons"] for p in doc["parts"] if p["title"].startswith("Denials") for r in p["rows"]]
    assert reasons and set(reasons) == {"(reason withheld)"}
    ann = Pseudonyms("s3cret").user("CORP\\Ann")
    holders = [r for p in doc["parts"] for r in p["rows"] if ann in json.dumps(r)]
    assert len(holders) >= 2 and "ann" not in json.dumps(doc).replace("Plann", "")
    # The vendor's view against ours, per server: the peak minute and who held licenses then.
    p = Pseudonyms("s3cret")
    (evidence,) = [x for x in doc["parts"] if x["title"].startswith("The vendor's view")]
    ccu = next(r for r in evidence["rows"] if r["feature"] == "F_CCU")
    assert (ccu["server"], ccu["vendor_view_max"], ccu["measured_peak"], ccu["peak_at"]) == (
        "lic01", 3, 3, "2026-03-02T10:10:00Z")
    assert ccu["vendor_reported_max"] is None and ccu["vendor_reported_days"] == 0
    assert ccu["holders_at_peak"] == ", ".join(sorted(
        f"{p.holder(f'{u}@{h}')} x1 since 2026-03-02T{t}:00Z" for u, h, t in (("ann", "pc1", "09:00"),
                                                                            ("bob", "pc2", "10:00"),
                                                                            ("cat", "pc3", "10:10"))))
    # Output files: a symlink is never written through (with --force the link itself is replaced), a
    # missing directory is one line, not a traceback.
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert "exists: give --force" in lictel("export", "usage", "-o", str(link), check=False).stderr
    lictel("export", "usage", "-o", str(link), "--force")
    assert target.read_text() == "keep me" and not link.is_symlink() and link.read_text().startswith("org,")
    nowhere = lictel("export", "usage", "-o", str(tmp_path / "no" / "such" / "x.csv"), check=False)
    assert nowhere.returncode != 0 and "does not exist" in nowhere.stderr and "Traceback" not in nowhere.stderr
    # Without --from/--to: the whole stored range, named in the title; the figures are the same.
    whole = json.loads(lictel("report", "compliance", "--format", "json").stdout)
    assert whole["report"] == ("Compliance report 2026-01-05T09:00:00Z to 2026-03-03T14:01:00Z (data from "
                               "2026-01-05T09:00:00Z to 2026-03-03T14:01:00Z)")
    period = json.loads(lictel("report", "compliance", "--format", "json", "--from", "2000-01-01", "--to",
                               "2030-01-01").stdout)
    assert period["report"].endswith("(data from 2026-01-05T09:00:00Z to 2026-03-03T14:01:00Z)")
    cover = {r["feature"]: r["cover_99_or_optimal"] for r in period["rows"]}
    assert cover["F_CCU"] == 3  # over F_CCU's own minutes, not 30 years of nothing
    # Tables are for reading: fractions rounded; csv keeps them exact.
    table = lictel("report", "usage", "--feature", "F_CCU").stdout
    assert "0.13" in table and "0.131944" not in table
    assert "0.131944" in lictel("report", "usage", "--feature", "F_CCU", "--format", "csv").stdout


def test_sql_views_agree_with_the_reports(client: object) -> None:
    day = client.query("SELECT peak, low, round(avg, 6), round(license_hours, 6) FROM lictel.usage_day "  # type: ignore[attr-defined]
                       "WHERE level = 'estate' AND feature = 'F_CCU' ORDER BY day").result_rows
    assert [list(r) for r in day] == [[3, 0, 0.131944, round(190 / 60, 6)], [1, 0, 0.542361, round(781 / 60, 6)]]
    hour = client.query("SELECT peak, round(avg, 6) FROM lictel.usage_hour WHERE level = 'estate' "  # type: ignore[attr-defined]
                        "AND feature = 'F_CCU' AND hour = '2026-03-02 10:00:00'").result_rows
    assert hour == [(3, round(130 / 60, 6))]
    den = client.query("SELECT user, denials FROM lictel.denials_hour ORDER BY hour").result_rows  # type: ignore[attr-defined]
    assert den == [("dan", 1), ("eve", 1)]
    ent = client.query("SELECT feature, licenses FROM lictel.entitled(day = '2026-03-02') "  # type: ignore[attr-defined]
                       "ORDER BY feature").result_rows
    assert ent == [("F_CCU", 2), ("F_UD", 1)]


def test_reports_on_an_empty_data_dir_say_what_to_do(tmp_path: Path) -> None:
    lictel = Lictel(tmp_path, {**os.environ, "LICTEL_DATA_DIR": str(tmp_path / "none")})
    for args in (("report", "ud"), ("report", "sizing"), ("export", "usage")):
        run = lictel(*args, check=False)
        assert run.returncode == 2 and "no lictel data" in run.stderr and "Traceback" not in run.stderr


def test_user_names_compare_the_same_in_sql_and_python(client: object) -> None:
    names = ["CORP\\Ann", "ann@corp.example", " Bob ", "a\\b\\Carl", "dan@x@y", "EVE"]
    got = client.query(f"SELECT {SQL_USER} FROM (SELECT arrayJoin({{n:Array(String)}}) AS user)",  # type: ignore[attr-defined]
                       parameters={"n": names}).result_rows
    assert [r[0] for r in got] == [normalize_user(n) for n in names]


def test_reports_that_compare_with_entitlements_use_licenses_charged(warehouse: tuple[Settings, object]) -> None:
    from lictel.dupgroup import DupRules
    from lictel.reports.compliance import compliance

    _, client = warehouse
    # ann opens three sessions of F_UH on pc1 (three checkouts, one license under UH) for an hour;
    # bob one on pc2. Two licenses are owned: the checkouts (4) exceed them, the licenses charged (2) do not.
    spec = [("09:00", "OUT", "ann", "pc1", "a"), ("09:05", "OUT", "ann", "pc1", "b"),
            ("09:10", "OUT", "ann", "pc1", "c"), ("09:20", "OUT", "bob", "pc2", "d"),
            ("10:00", "IN", "ann", "pc1", "a"), ("10:00", "IN", "ann", "pc1", "b"),
            ("10:00", "IN", "ann", "pc1", "c"), ("10:00", "IN", "bob", "pc2", "d")]
    events = [Event(f"lic01:x:{i}", parse_ts(f"2026-03-02T{ts}:00Z"), "acme", "lic01", "CITRIX", "F_UH", action,
                    user, host, handle, 1, None, "lic01:x", i)
              for i, (ts, action, user, host, handle) in enumerate(spec)]
    rows = compute_rows(events, rules=DupRules({"F_UH": "UH"}))
    write_minute_rows(client, DB, rows, version=1)  # type: ignore[arg-type]
    store(client, DB, parse_contract_csv("feature,count,start,expiry,vendor,note\nF_UH,2,2026-01-01,,CITRIX,\n",
                                         org="acme", source="c.csv"))  # type: ignore[arg-type]
    scope = Scope("acme", "F_UH", MON, WED)
    size = sizing(client, DB, scope)
    # Charged over the feature's 61 stored minutes (09:00-10:01): 1 from 09:00, 2 from 09:20, 0 from
    # 10:00 (checkouts would reach 4).
    assert [r[3:10] for r in size.rows] == [[61, 2, 2, 2, 2, round((20 + 40 * 2) / 61, 3), "UH"]]
    assert overuse(client, DB, scope, {}).rows == []
    comp = compliance(client, DB, scope, {})
    assert [(r[4], r[-1]) for r in comp.rows] == [(2, "UH")]
    assert any("licenses charged" in n for n in comp.notes)
    assert max(r.peak for r in rows) == 4  # what every checkout counted: above the two licenses
    # Chargeback splits licenses charged: ann's three sessions are one license for the hour.
    client.insert(f"{DB}.raw_events", [[getattr(e, c) for c in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
                  column_names=RAW_COLUMNS)
    cb = chargeback(client, DB, scope, {"ann": "eng", "bob": "ops"})
    assert [r[2:] for r in cb.rows] == [
        ["eng", 1.0, 0.6, 1, 0.5, 2, "2026-03-02T09:20:00Z", "UH"],
        ["ops", round(40 / 60, 4), 0.4, 1, 0.5, 2, "2026-03-02T09:20:00Z", "UH"]]


def test_chargeback_splits_a_license_shared_by_users_of_one_host(warehouse: tuple[Settings, object]) -> None:
    from lictel.dupgroup import DupRules

    _, client = warehouse
    spec = [("09:00", "OUT", "cy"), ("09:00", "OUT", "di"), ("10:00", "IN", "cy"), ("10:00", "IN", "di")]
    events = [Event(f"lic01:h:{i}", parse_ts(f"2026-03-02T{ts}:00Z"), "acme", "lic01", "V", "F_H", action, user,
                    "pc9", None, 1, None, "lic01:h", i) for i, (ts, action, user) in enumerate(spec)]
    write_minute_rows(client, DB, compute_rows(events, rules=DupRules({"F_H": "H"})), version=1)  # type: ignore[arg-type]
    client.insert(f"{DB}.raw_events", [[getattr(e, c) for c in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
                  column_names=RAW_COLUMNS)
    cb = chargeback(client, DB, Scope("acme", "F_H"), {"cy": "eng", "di": "ops"})  # type: ignore[arg-type]
    # One license (same host) for the hour, half each; two checkouts would have charged two hours.
    assert [r[2:8] for r in cb.rows] == [["eng", 0.5, 0.5, 0.5, 0.5, 1], ["ops", 0.5, 0.5, 0.5, 0.5, 1]]


def test_denials_by_user_and_host_put_the_most_denied_first(warehouse: tuple[Settings, object]) -> None:
    _, client = warehouse
    who = [("ann", "h1")] * 3 + [("bob", "h2")] + [("cat", "h3")] * 2
    events = [Event(f"s:d:{i}", parse_ts(f"2026-03-02T09:{i:02d}:00Z"), "acme", "s", "V", "F", "DENIED", u, h, None,
                    1, "Licensed number of users already reached. (-4,342)", "s:d", i) for i, (u, h) in enumerate(who)]
    client.insert(f"{DB}.raw_events", [[getattr(e, c) for c in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
                  column_names=RAW_COLUMNS)
    for by, names in (("user", ["ann", "cat", "bob"]), ("host", ["h1", "h3", "h2"])):
        rep = denials(client, DB, Scope("acme"), by=by)
        assert [(r[2], r[3]) for r in rep.rows] == list(zip(names, [3, 2, 1], strict=True)), by
    assert denials(client, DB, Scope("acme"), by="feature").parts[0].rows == []  # no UNSUPPORTED requests


def test_a_phantom_is_judged_by_the_engine_s_rules(warehouse: tuple[Settings, object]) -> None:
    """ivy@pc9 checks out twice and in once: the check-in closes the older checkout (the engine's
    rule), so the newer one is held until the daemon restarts at 20:00, a phantom: one check-in
    never counts for two. zed's checkout ends at the restart too; the check-in after it is an orphan."""
    _, c = warehouse
    spec = [("2026-03-02T08:00", "OUT", "ivy", "pc9"), ("2026-03-02T08:30", "OUT", "ivy", "pc9"),
            ("2026-03-02T09:00", "IN", "ivy", "pc9"), ("2026-03-02T06:00", "OUT", "zed", "pc8"),
            ("2026-03-02T20:00", "RESTART", "", ""), ("2026-03-02T20:05", "IN", "zed", "pc8"),
            ("2026-03-02T23:00", "OUT", "amy", "pc1"), ("2026-03-02T23:30", "IN", "amy", "pc1")]
    events = [Event(f"lic01:p:{i}", parse_ts(f"{ts}:00Z"), "acme", "lic01", "V", "" if a == "RESTART" else "F", a, u,
                    h, None, 1, None, "lic01:p", i) for i, (ts, a, u, h) in enumerate(spec)]
    c.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
             column_names=RAW_COLUMNS)
    write_minute_rows(c, DB, compute_rows(events), version=1)  # type: ignore[arg-type]
    rows = [r for r in dormant(c, DB, Scope("acme"), {}, held_hours=10).rows if r[0] == "phantom"]  # type: ignore[arg-type]
    assert [(r[3], r[4], r[5], r[6]) for r in rows] == [
        ("zed@pc8", "server lic01; released only by a daemon restart", "2026-03-02T06:00:00Z", round(14 / 24, 2)),
        ("ivy@pc9", "server lic01; released only by a daemon restart", "2026-03-02T08:30:00Z",
         round(11.5 / 24, 2))]


@pytest.mark.parametrize("seed", range(4))
def test_chargeback_adds_up_to_the_engine_s_licenses_charged(warehouse: tuple[Settings, object], seed: int) -> None:
    """Random checkouts (counts 1-3, partial check-ins, orphans, restarts, simultaneous events) on two
    servers under NONE, UH, H and SITE: with every user in one group, the chargeback's license-hours
    of a feature are the engine's charged license-seconds, its peak the engine's charged estate peak,
    and the group holds the whole peak at that instant."""
    from lictel.dupgroup import DupRules

    _, c = warehouse
    rng = random.Random(seed)
    rules = {"F_NONE": "NONE", "F_UH": "UH", "F_H": "H", "F_SITE": "SITE"}
    users, hosts = ["ann", "bob", "cy"], ["pc1", "pc2"]
    events = []
    for i in range(400):
        t = MON + rng.randrange(0, 20 * 3600) * 1_000_000 // 30 * 30  # on 30 s steps: simultaneous events happen
        server = rng.choice(["lic01", "lic02"])
        if rng.random() < 0.02:
            events.append(Event(f"{server}:r:{i}", t, "acme", server, "V", "", "RESTART", "", "", None, 1, None,
                                f"{server}:r", i))
            continue
        action = "OUT" if rng.random() < 0.55 else "IN"
        events.append(Event(f"{server}:e:{i}", t, "acme", server, "V", rng.choice(list(rules)), action,
                            rng.choice(users), rng.choice(hosts), None, rng.randint(1, 3), None, f"{server}:e", i))
    rows = compute_rows(events, rules=DupRules(rules))
    write_minute_rows(c, DB, rows, version=1)  # type: ignore[arg-type]
    c.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
             column_names=RAW_COLUMNS)
    cb = chargeback(c, DB, Scope("acme"), dict.fromkeys(users, "all"))  # type: ignore[arg-type]
    estate = [r for r in rows if r.server == "" and r.source == "license"]
    assert estate and {r[1] for r in cb.rows} == {r.feature for r in estate if r.charged_license_us}
    for r in cb.rows:
        mine = [m for m in estate if m.feature == r[1]]
        assert r[2] == "all" and r[3] == pytest.approx(sum(m.charged_license_us for m in mine) / 3.6e9, abs=1e-3)
        assert r[7] == max(m.charged_peak for m in mine) == r[5], r
        assert r[9] == rules[r[1]]


def test_chargeback_forgets_what_a_restart_released(warehouse: tuple[Settings, object]) -> None:
    """Under rule NONE, ann's two licenses end at the daemon's restart; bob's three later are the
    peak, held by ops alone."""
    _, c = warehouse
    spec = [("09:00", "OUT", "ann", 2), ("10:00", "RESTART", "", 1), ("11:00", "OUT", "bob", 3),
            ("12:00", "IN", "bob", 3)]
    events = [Event(f"lic01:n:{i}", parse_ts(f"2026-03-02T{ts}:00Z"), "acme", "lic01", "V",
                    "" if a == "RESTART" else "F_N", a, u, "pc1", None, n, None, "lic01:n", i)
              for i, (ts, a, u, n) in enumerate(spec)]
    write_minute_rows(c, DB, compute_rows(events), version=1)  # type: ignore[arg-type]
    c.insert(f"{DB}.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events],  # type: ignore[attr-defined]
             column_names=RAW_COLUMNS)
    cb = chargeback(c, DB, Scope("acme"), {"ann": "eng", "bob": "ops"})  # type: ignore[arg-type]
    assert [r[2:9] for r in cb.rows] == [["eng", 2.0, 0.4, 0, 0.0, 3, "2026-03-02T11:00:00Z"],
                                        ["ops", 3.0, 0.6, 3, 1.0, 3, "2026-03-02T11:00:00Z"]]
