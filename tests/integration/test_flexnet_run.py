"""`lictel run --flexnet` end to end: a FlexNet log through the real pipeline into chDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row, to_csv
from producers.flexnet import FlexnetParser
from tests.integration.conftest import Lictel

DATA = Path(__file__).parent.parent / "data" / "flexnet"
pytestmark = pytest.mark.integration


def test_run_flexnet_stores_what_the_parser_reads(lictel: Lictel) -> None:
    log = DATA / "basic.log"
    run = lictel("run", "--flexnet", str(log), "--server", "lic01", "--org", "acme", "--tz", "Europe/Berlin")
    err = " ".join(run.stderr.split())
    assert "read 21 log lines: events DENIED 1, DEQUEUED 1, IN 4, OUT 4, QUEUED 1, RESTART 3, UNSUPPORTED 1" in err
    assert "2 bad input line(s) dead-lettered" in err
    assert f"line 14 of {log}: unparseable" in err
    p = FlexnetParser(org="acme", server="lic01", tz="Europe/Berlin")
    events = [i for i in p.parse(log.read_text(encoding="utf-8").splitlines(), log.name) if isinstance(i, Event)]
    for level in ("pool", "estate"):
        want = to_csv(minute_row(r) for r in compute_rows(events) if r.level == level)
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == want
    # The UNSUPPORTED request (a feature the server does not serve) is not a denial: a table of its own.
    doc = json.loads(lictel("report", "denials", "--format", "json").stdout)
    assert [(r["feature"], r["denials"]) for r in doc["rows"]] == [("XDT_PLT_CCU", 1)]
    assert [(r["feature"], r["requests"], r["top_reasons"]) for r in doc["parts"][0]["rows"]] == [
        ("XDS_PLT_CCS", 1, "No such feature exists. (-5,346)")]
    peak = lictel("report", "peak", "--format", "csv").stdout.splitlines()
    assert peak[0] == "org,feature,series,server,peak,charged_peak,dup_group,peak_at,avg,license_hours,denials"
    assert "acme,XDT_PLT_CCU,license,(estate),2,2,NONE," in "\n".join(peak)


def test_a_report_on_a_missing_data_dir_says_so_and_creates_nothing(lictel: Lictel, tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    run = lictel("report", "sizing", "--data-dir", str(missing), check=False)
    assert run.returncode != 0 and "no lictel data in" in run.stderr and "--data-dir" in run.stderr
    assert not missing.exists()


def test_flexnet_needs_a_server_name(lictel: Lictel) -> None:
    run = lictel("run", "--flexnet", str(DATA / "basic.log"), check=False)
    assert run.returncode == 2 and "--server NAME" in run.stderr


def test_pasted_segments_are_sent_in_time_order(lictel: Lictel, tmp_path: Path) -> None:
    # Two days of one server pasted newest-first: the later day comes first in the file.
    day1 = (" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026\n 9:00:00 (CITRIX) OUT: \"F\" u1@h1\n"
            "10:00:00 (CITRIX) IN: \"F\" u1@h1\n")
    day2 = (" 8:00:00 (lmgrd) TIMESTAMP 3/3/2026\n 9:00:00 (CITRIX) OUT: \"F\" u2@h2\n"
            " 9:00:00 (CITRIX) OUT: \"F\" u3@h3\n10:00:00 (CITRIX) IN: \"F\" u2@h2\n"
            "10:00:00 (CITRIX) IN: \"F\" u3@h3\n")
    log = tmp_path / "pasted.log"
    log.write_text(day2 + day1)
    run = lictel("run", "--flexnet", str(log), "--server", "lic01", "--tz", "UTC")
    err = " ".join(run.stderr.split())
    assert "segment(s) out of order; its 6 events were sent in time order" in err
    assert "late event" not in err
    hours = lictel("export", "usage", "--level", "pool", "--granularity", "day", "--format", "csv").stdout
    assert [line.split(",")[3:6] for line in hours.splitlines()[1:]] == [
        ["2026-03-02T00:00:00Z", "1", "0"], ["2026-03-03T00:00:00Z", "2", "0"]]
