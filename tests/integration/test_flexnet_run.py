"""`lictel run --flexnet` end to end: a FlexNet log through the real pipeline into chDB."""

from __future__ import annotations

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
    assert "read 21 log lines: events DENIED 2, DEQUEUED 1, IN 4, OUT 4, QUEUED 1, RESTART 3" in err
    assert "2 bad input line(s) dead-lettered" in err
    assert f"line 14 of {log}: unparseable" in err
    p = FlexnetParser(org="acme", server="lic01", tz="Europe/Berlin")
    events = [i for i in p.parse(log.read_text(encoding="utf-8").splitlines(), log.name) if isinstance(i, Event)]
    for level in ("pool", "estate"):
        want = to_csv(minute_row(r) for r in compute_rows(events) if r.level == level)
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == want


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
