"""`lictel up --serve-port`: the dashboard and API on live data, served by the sink that owns the
embedded warehouse, while a producer keeps sending; never "stop the sink to look"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import free_port
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.export import minute_row
from lictel.timeutil import parse_ts
from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration
TOKEN = "live-token-0123456789abcdef"


def _events(first: int, n: int, hour: int) -> list[dict[str, Any]]:
    """``n`` checkouts of about 40 minutes from ``hour``:00 on 2026-03-02, then their check-ins."""
    out = []
    for i in range(first, first + n):
        start, stop = hour * 3600 + (i - first) * 90, hour * 3600 + (i - first) * 90 + 2400
        for j, (action, at) in enumerate((("OUT", start), ("IN", stop))):
            out.append({"event_id": f"lic01:live:{2 * i + j}", "ts": f"2026-03-02T{at // 3600:02d}:{at // 60 % 60:02d}:"
                        f"{at % 60:02d}Z", "org": "acme", "server": "lic01", "vendor": "V", "feature": "F",
                        "action": action, "user": f"u{i % 9}", "host": f"h{i % 6}", "handle": str(i), "count": 1,
                        "reason": None, "source": "lic01:live", "seq": 2 * i + j})
    return sorted(out, key=lambda e: (e["ts"], e["seq"]))


def _get(base: str, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait(what: str, check: Any, up: subprocess.Popen[str], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise AssertionError(f"lictel up exited while waiting for {what}:\n{up.communicate()[0]}")
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_dashboard_shows_minutes_as_they_become_final(lictel: Lictel, tmp_path: Path) -> None:
    refused = lictel("up", "--serve-port", str(free_port()), "--serve-host", "0.0.0.0", "--no-auth", check=False)
    assert refused.returncode == 2 and "loopback address only" in refused.stdout + refused.stderr

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([sys.executable, "-m", "lictel.cli", "up", "--serve-port", str(port)],
                          env={**lictel.env, "LICTEL_API_TOKENS": TOKEN}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        _wait("the API", lambda: _get(base, "/healthz", None)[0] == 200, up)
        assert _get(base, "/api/v1/features", None)[0] == 401
        assert json.loads(_get(base, "/api/v1/features")[1])["rows"] == []

        first, second = _events(0, 30, 8), _events(30, 30, 10)
        for name, batch in (("first", first), ("second", second)):
            (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in batch))
        # Not the end of the input: the producer leaves the stream open for more.
        lictel("produce", "jsonl", str(tmp_path / "first.jsonl"), "--no-final")
        rows = _wait("the first final minutes", lambda: json.loads(_get(
            base, "/api/v1/usage?level=pool&granularity=minute")[1])["rows"], up)
        assert rows[0]["minute"] == "2026-03-02T08:00:00Z" and rows[-1]["minute"] < "2026-03-02T10:00:00Z"
        assert "F</a>" in _get(base, "/")[1]  # the estate page, live
        lictel("produce", "jsonl", str(tmp_path / "second.jsonl"))  # more, now ending the input
        everything = [_event(e) for e in first + second]
        want = [minute_row(r) for r in compute_rows(everything) if r.level == "pool"]
        got = _wait("every minute", lambda: (lambda rows: rows if len(rows) == len(want) else None)(json.loads(
            _get(base, "/api/v1/usage?level=pool&granularity=minute")[1])["rows"]), up)
        assert got == [{k: (float(v) if k in ("avg", "license_seconds") else v) for k, v in r.items()} for r in want]
    finally:
        up.send_signal(signal.SIGTERM)
        out = up.communicate(timeout=60)[0]
    assert up.returncode == 0, out
    logs = (lictel.data_dir / "logs" / "sink.log").read_text()
    assert "serving the dashboard and API" in logs and "Traceback" not in logs


def _event(e: dict[str, Any]) -> Event:
    return Event(e["event_id"], parse_ts(e["ts"]), e["org"], e["server"], e["vendor"], e["feature"], e["action"],
                 e["user"], e["host"], e["handle"], e["count"], e["reason"], e["source"], e["seq"])
