"""Alerts end to end: `lictel up --alerts` on a scenario that crosses the entitlement, delivered to a
local webhook receiver started here (which refuses its first request, so a retry is needed)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import free_port
from tests.integration.conftest import Lictel
from tests.integration.test_live_serve import TOKEN, _get, _wait

pytestmark = pytest.mark.integration


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.refused < fail_first:
                    outer.refused += 1
                    self.send_response(500)
                else:
                    outer.bodies.append(json.loads(data))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.server.shutdown()


def _scenario() -> list[dict[str, Any]]:
    """F on lic01, 2026-03-02: 12 checkouts at 09:00 (one a minute from 09:00 to 09:11), nine
    returned at 09:30, the rest at 10:00. Entitled 10: over it 09:10-09:30, at 90 % or more
    09:08-09:30."""
    spec = [(f"09:{k:02d}", "OUT", k) for k in range(12)] + [("09:30", "IN", k) for k in range(9)]
    spec += [("10:00", "IN", k) for k in range(9, 12)]
    return [{"event_id": f"lic01:a:{i}", "ts": f"2026-03-02T{t}:00Z", "org": "acme", "server": "lic01",
             "vendor": "V", "feature": "F", "action": a, "user": f"u{k}", "host": f"h{k}", "handle": str(k),
             "count": 1, "reason": None, "source": "lic01:a", "seq": i} for i, (t, a, k) in enumerate(spec)]


def test_alerts_fire_and_resolve_once_each(lictel: Lictel, tmp_path: Path, receiver: Receiver) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[webhook]\nurl = "{receiver.url}"\nretries = 3\nretry_s = 0.2\n\n'
                     '[[rule]]\nname = "busy"\nkind = "utilisation"\nfeature = "F"\npercent = 90\nminutes = 5\n\n'
                     '[[rule]]\nname = "overdraft"\nkind = "overdraft"\n')
    test = lictel("alerts", "test", "--alerts", str(rules))
    assert "delivered" in test.stdout and receiver.refused == 1  # refused once, then delivered
    assert receiver.texts() == ["[busy] a test of lictel's alerts: this webhook receives them"]
    receiver.bodies.clear()

    contract = tmp_path / "contract.csv"
    contract.write_text("feature,count,start,expiry,vendor,note\nF,10,2026-01-01,,V,\n")
    lictel("entitlements", "import", str(contract), "--org", "acme")
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _scenario()))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([sys.executable, "-m", "lictel.cli", "up", "--alerts", str(rules), "--serve-port",
                           str(port)], env={**lictel.env, "LICTEL_API_TOKENS": TOKEN, "LICTEL_METRICS_PORT": "0"},
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        _wait("the API", lambda: _get(base, "/healthz", None)[0] == 200, up)
        lictel("produce", "jsonl", str(events))
        _wait("four alerts", lambda: len(receiver.bodies) >= 4, up)
        time.sleep(3)  # anything more would be a second firing
        assert receiver.texts() == [
            "[overdraft] F (acme): 11 licenses in use, 1 over the 10 entitled (overdraft) at 2026-03-02T09:10:00Z",
            "[busy] F (acme): 12 of 10 licenses in use (120 %, at least 90 %) for 5 minutes since "
            "2026-03-02T09:08:00Z",
            "[busy] resolved: F (acme) below 90 % of 10 at 2026-03-02T09:30:00Z",
            "[overdraft] resolved: F (acme) back within the 10 entitled at 2026-03-02T09:30:00Z",
        ], receiver.texts()
        history = json.loads(_get(base, "/api/v1/alerts")[1])["rows"]
        assert sorted((r["rule"], r["state"], r["delivered"]) for r in history) == [
            ("busy", "firing", True), ("busy", "resolved", True), ("overdraft", "firing", True),
            ("overdraft", "resolved", True)]
        _scrape_matches_the_grafana_dashboard(lictel.data_dir)
    finally:
        up.send_signal(signal.SIGTERM)
        out = up.communicate(timeout=60)[0]
    assert up.returncode == 0, out


def _scrape_matches_the_grafana_dashboard(data: Path) -> None:
    """The sink's Prometheus endpoint has the live gauges, and every metric the Grafana dashboard in
    the repo queries."""
    port = int((data / "metrics-sink.port").read_text())

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    text = _wait_for(lambda: (lambda t: t if "lictel_feature_entitled{" in t else None)(scrape()))
    assert 'lictel_feature_entitled{feature="F",org="acme",server=""} 10.0' in text
    # The input ended with everything returned: nothing is in use now.
    assert 'lictel_feature_in_use{feature="F",org="acme",server="lic01"} 0.0' in text
    assert 'lictel_sink_consumer_lag{topic=' in text and "lictel_final_minute_age_seconds " in text
    dashboard = (Path(__file__).resolve().parents[2] / "docs" / "grafana" / "lictel.json").read_text()
    used = set(re.findall(r"lictel_[a-z_]+", " ".join(t["expr"] for p in json.loads(dashboard)["panels"]
                                                       for t in p["targets"])))
    assert used and all(f"\n{m}{{" in text or f"\n{m} " in text for m in used), used


def _wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_a_wrong_rules_file_stops_up_before_it_starts(lictel: Lictel, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[webhook]\nurl = "http://127.0.0.1:9/x"\n[[rule]]\nkind = "utilisation"\npercent = 90\n')
    run = lictel("up", "--alerts", str(rules), check=False)
    assert run.returncode == 2 and "rule 1: a utilisation rule needs minutes" in run.stdout + run.stderr
    assert not (lictel.data_dir / "logs").exists()
