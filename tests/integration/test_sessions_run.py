"""`lictel run --sessions` end to end: session exports through the sessions topic, the stream and the
sink, stored as the `sessions` series next to the license servers' series, compared minute by minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.export import minute_row, to_csv
from producers.sessions import SessionExportReader
from tests.integration.conftest import Lictel

DATA = Path(__file__).parent.parent / "data" / "sessions"
pytestmark = pytest.mark.integration


def test_sessions_and_license_series_side_by_side(lictel: Lictel, tmp_path: Path) -> None:
    # The license server logged one XDT_PLT_CCU checkout 08:00-09:00; the sessions imply up to two.
    lic = tmp_path / "lic.jsonl"
    lic.write_text("".join(json.dumps({
        "event_id": f"lic01:x:{i}", "ts": ts, "org": "acme", "server": "lic01", "vendor": "CITRIX",
        "feature": "XDT_PLT_CCU", "action": action, "user": "ann", "host": "ANN-PC", "source": "lic01:x",
        "seq": i}) + "\n" for i, (ts, action) in enumerate((("2026-03-02T08:00:00Z", "OUT"),
                                                              ("2026-03-02T09:00:00Z", "IN")))))
    export = DATA / "monitor_sessions.json"
    run = lictel("run", "--jsonl", str(lic), "--sessions", str(export), "--site", "ddc01", "--org", "acme")
    err = " ".join(run.stderr.split())
    assert "5 sessions (1 still running), 6 connections; events DISCONNECT 1, LOGOFF 4, LOGON 5, RECONNECT 1" in err
    assert f"{export} record 6: field 'SessionKey': missing" in err
    out = " ".join(run.stdout.split())
    # Implied above logged: 08:10-08:44 and 08:50-08:59 (two devices), and 09:00 (the kiosk, 1 vs 0).
    assert ("acme XDT_PLT_CCU: logged peak 1 vs implied peak 2 over 61 minute(s) both cover; implied above "
            "logged in 46 minute(s), by up to 1 at 2026-03-02T08:10:00Z") in out

    reader = SessionExportReader("acme", "ddc01", "XDT_PLT_CCU")
    events, _ = reader.read(export)
    expected = compute_rows(events)
    for level in ("pool", "estate"):
        want = to_csv(minute_row(r) for r in expected if r.level == level)
        got = lictel("export", "usage", "--source", "sessions", "--level", level, "--format", "csv").stdout
        assert got == want
        lic_rows = lictel("export", "usage", "--level", level, "--format", "csv").stdout.splitlines()
        assert len(lic_rows) == 1 + 61 and all(",XDT_PLT_CCU," in r for r in lic_rows[1:])

    # Session events are raw events too, so a recompute from them reproduces both series exactly.
    rec = lictel("reconcile", "--from", "2026-03-02T08:00:00Z", "--to", "2026-03-02T09:01:00Z")
    assert "from 13 raw events" in rec.stdout and ", 0 changed" in rec.stdout


def test_user_unit_and_disconnected_rule_come_from_configuration(lictel: Lictel) -> None:
    lictel.env["LICTEL_SESSIONS_UNIT"] = "user"
    lictel("run", "--sessions", str(DATA / "sessions_events.csv"), "--site", "ddc01")
    rows = lictel("export", "usage", "--source", "sessions", "--level", "estate", "--granularity", "hour",
                  "--format", "csv").stdout.splitlines()
    # By user, dan shares ANN-PC with ann: three users 08:20-08:25 UTC (the CSV is in +01:00).
    assert [r.split(",")[3:5] for r in rows[1:]] == [["2026-03-02T08:00:00Z", "3"], ["2026-03-02T09:00:00Z", "1"]]


def test_sessions_need_a_site(lictel: Lictel) -> None:
    run = lictel("run", "--sessions", str(DATA / "sessions_events.csv"), check=False)
    assert run.returncode == 2 and "--site NAME" in run.stderr
