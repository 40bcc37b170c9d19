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
