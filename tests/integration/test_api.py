"""`lictel serve`, the real server process over real chDB, asked over HTTP as a client would.

The estate (org acme, feature F, 2026-03-02 UTC unless said):
- lic01: ann@pc1 09:00-09:30; bob@pc2 09:10-10:00; carl@PC3 2 licenses 09:20-11:00 (host written
  in capitals); ann@pc1 again on 2026-03-03 08:00-08:30;
- lic02: dan@pc4 09:15-09:45; a denial of eve at 09:50.
So at 09:20 lic01 holds 4 (ann 1 since 09:00, bob 1 since 09:10, carl 2 since 09:20) and lic02 1.
License-hours: ann 0.5 + 0.5, bob 50/60, carl 2 x 100/60, dan 0.5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import free_port
from lictel.config import Settings
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.timeutil import parse_ts
from lictel.warehouse import connect, migrate
from sinks.clickhouse import RAW_COLUMNS, write_minute_rows

pytestmark = pytest.mark.integration
TOKEN, OTHER = "t0k3n-for-the-api-tests", "a-second-token-also-valid"
SPEC = [
    ("lic01", "2026-03-02T09:00", "OUT", "ann", "pc1", 1), ("lic01", "2026-03-02T09:10", "OUT", "bob", "pc2", 1),
    ("lic01", "2026-03-02T09:20", "OUT", "carl", "PC3", 2), ("lic01", "2026-03-02T09:30", "IN", "ann", "pc1", 1),
    ("lic01", "2026-03-02T10:00", "IN", "bob", "pc2", 1), ("lic01", "2026-03-02T11:00", "IN", "carl", "PC3", 2),
    ("lic01", "2026-03-03T08:00", "OUT", "ann", "pc1", 1), ("lic01", "2026-03-03T08:30", "IN", "ann", "pc1", 1),
    ("lic02", "2026-03-02T09:15", "OUT", "dan", "pc4", 1), ("lic02", "2026-03-02T09:45", "IN", "dan", "pc4", 1),
    ("lic02", "2026-03-02T09:50", "DENIED", "eve", "pc5", 1),
]


def _env(data: Path, tokens: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    env["LICTEL_DATA_DIR"] = str(data)
    if tokens is not None:
        env["LICTEL_API_TOKENS"] = tokens
    return env


def _cli(data: Path, *args: str, tokens: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lictel.cli", *args], env=_env(data, tokens) | {"COLUMNS": "200"},
                          text=True, capture_output=True, timeout=120)


@dataclass
class Api:
    base: str
    data: Path

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(self.base + path)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, path: str) -> Any:
        code, _, body = self.get(path)
        assert code == 200, body
        return json.loads(body)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("api") / "data"
    settings = Settings(data_dir=d)
    c = connect(settings)
    try:
        migrate(c, settings)
        events = [Event(f"{srv}:log:{i}", parse_ts(f"{ts}:00Z"), "acme", srv, "CITRIX", "F", a, u, h, None, n,
                        "-4 (licensed number of users already reached)" if a == "DENIED" else None, f"{srv}:log", i)
                  for i, (srv, ts, a, u, h, n) in enumerate(SPEC)]
        c.insert("lictel.raw_events", [[getattr(e, col) for col in RAW_COLUMNS] for e in events],
                 column_names=RAW_COLUMNS)
        write_minute_rows(c, "lictel", compute_rows(events), version=1)
    finally:
        c.close()
    return d


@pytest.fixture(scope="module")
def api(data: Path) -> Iterator[Api]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lictel.cli", "serve", "--port", str(port)],
                            env=_env(data, f"{TOKEN}, {OTHER}"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    api = Api(f"http://127.0.0.1:{port}", data)
    deadline = time.monotonic() + 60
    while True:
        try:
            if api.get("/healthz", token=None)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"lictel serve did not answer:\n{proc.communicate()[0]}")
        time.sleep(0.2)
    yield api
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out, out


def test_every_api_route_needs_a_valid_token(api: Api) -> None:
    schema = api.json("/openapi.json")
    routes = [p for p in schema["paths"] if p.startswith("/api/")]
    assert len(routes) >= 12
    for path in routes:
        for token in (None, "wrong-token-of-the-same-size!", ""):
            code, headers, body = api.get(path, token=token)
            assert code == 401, (path, token, body)
            assert headers.get("www-authenticate") == "Bearer" and "LICTEL_API_TOKENS" in body
    assert api.get("/api/v1/features", token=OTHER)[0] == 200
    assert api.get("/healthz", token=None)[0] == 200


def test_usage_is_exactly_the_export(api: Api) -> None:
    for query, args in [
        ("level=pool&granularity=minute", ["--level", "pool", "--granularity", "minute"]),
        ("level=estate&granularity=hour&measure=charged", ["--level", "estate", "--granularity", "hour",
                                                           "--measure", "charged"]),
        ("level=pool&granularity=hour&server=lic01&from=2026-03-02T09:00:00Z&to=2026-03-02T11:00:00Z",
         ["--level", "pool", "--granularity", "hour", "--server", "lic01", "--from", "2026-03-02T09:00:00Z",
          "--to", "2026-03-02T11:00:00Z"]),
        ("level=pool&granularity=day&tz=America/New_York&feature=F",
         ["--level", "pool", "--granularity", "day", "--tz", "America/New_York", "--feature", "F"]),
    ]:
        code, headers, body = api.get(f"/api/v1/usage?{query}&format=csv")
        assert code == 200 and headers["content-type"].startswith("text/csv")
        export = _export(api.data, *args, "--format", "csv")
        assert body == export and body.count("\n") > 1, query
        as_json = api.json(f"/api/v1/usage?{query}")
        assert as_json["rows"] == json.loads(_export(api.data, *args, "--format", "json"))
    hours = api.json("/api/v1/usage?level=pool&granularity=hour&server=lic01&from=2026-03-02T09:00:00Z"
                     "&to=2026-03-02T11:00:00Z")["rows"]
    assert [(r["minute"], r["peak"]) for r in hours] == [("2026-03-02T09:00:00Z", 4), ("2026-03-02T10:00:00Z", 2)]


_exports: dict[tuple[str, ...], str] = {}


def _export(data: Path, *args: str) -> str:
    """`lictel export usage`, run once before the server holds the warehouse (chDB: one process)."""
    return _exports[args]


@pytest.fixture(scope="module", autouse=True)
def exports(data: Path) -> None:
    for args in [["--level", "pool", "--granularity", "minute"],
                 ["--level", "estate", "--granularity", "hour", "--measure", "charged"],
                 ["--level", "pool", "--granularity", "hour", "--server", "lic01", "--from", "2026-03-02T09:00:00Z",
                  "--to", "2026-03-02T11:00:00Z"],
                 ["--level", "pool", "--granularity", "day", "--tz", "America/New_York", "--feature", "F"]]:
        for fmt in ("csv", "json"):
            proc = _cli(data, "export", "usage", *args, "--format", fmt)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            _exports[(*args, "--format", fmt)] = proc.stdout


def test_holders_users_and_distinct(api: Api) -> None:
    got = api.json("/api/v1/holders?feature=F&minute=2026-03-02T09:20:00Z")["rows"]
    assert [(r["server"], r["instant"], r["user"], r["host"], r["count"], r["since"]) for r in got] == [
        ("lic01", "2026-03-02T09:20:00Z", "carl", "PC3", 2, "2026-03-02T09:20:00Z"),
        ("lic01", "2026-03-02T09:20:00Z", "ann", "pc1", 1, "2026-03-02T09:00:00Z"),
        ("lic01", "2026-03-02T09:20:00Z", "bob", "pc2", 1, "2026-03-02T09:10:00Z"),
        ("lic02", "2026-03-02T09:20:00Z", "dan", "pc4", 1, "2026-03-02T09:15:00Z")]
    # The minute's peak instant, not its start: at 10:00:00 bob returns, so 10:00 holds carl's 2.
    got = api.json("/api/v1/holders?feature=F&minute=2026-03-02T10:00:30Z&server=lic01")["rows"]
    assert [(r["user"], r["count"]) for r in got] == [("carl", 2)]
    # The peak minute of the export and the holders there agree.
    peak = max(api.json("/api/v1/usage?level=pool&granularity=minute&server=lic01")["rows"], key=lambda r: r["peak"])
    held = api.json(f"/api/v1/holders?feature=F&server=lic01&minute={peak['minute']}")["rows"]
    assert sum(r["count"] for r in held) == peak["peak"] == 4

    users = api.json("/api/v1/users?from=2026-03-02&to=2026-03-04")["rows"]
    assert [(r["user"], round(r["license_hours"], 6), r["checkouts"]) for r in users] == [
        ("carl", round(200 / 60, 6), 1), ("ann", 1.0, 2), ("bob", round(50 / 60, 6), 1), ("dan", 0.5, 1)]
    hosts = api.json("/api/v1/users?by=host&top=1&from=2026-03-02&to=2026-03-04")["rows"]
    assert hosts == [{"host": "PC3", "license_hours": round(200 / 60, 6), "checkouts": 1}]
    # Only what falls inside the range counts: 09:00-09:30 holds ann 0.5, bob 20 min, carl 2 x 10 min, dan 15 min.
    part = api.json("/api/v1/users?from=2026-03-02T09:00:00Z&to=2026-03-02T09:30:00Z")["rows"]
    assert {r["user"]: round(r["license_hours"], 6) for r in part} == {
        "ann": 0.5, "bob": round(20 / 60, 6), "carl": round(20 / 60, 6), "dan": 0.25}

    code, _, csv_text = api.get("/api/v1/distinct?feature=F&from=2026-03-02&to=2026-03-04&format=csv")
    assert code == 200 and csv_text == "feature,day,users,hosts\nF,2026-03-02,4,4\nF,2026-03-03,1,1\n"


def test_reports_answer_as_the_cli(api: Api) -> None:
    denied = api.json("/api/v1/denials")
    assert [(r["feature"], r["denials"]) for r in denied["rows"]] == [("F", 1)] and denied["notes"]
    peak = api.json("/api/v1/peak")["rows"]
    assert {(r["server"], r["peak"]) for r in peak} == {("(estate)", 5), ("lic01", 4), ("lic02", 1)}
    view = api.json("/api/v1/vendor-view?server=lic01&from=2026-03-02&to=2026-03-03")["rows"]
    assert [(r["day"], r["count_used_max"], r["ccu_devices"]) for r in view] == [("2026-03-02", 4, 3),
                                                                                   ("2026-03-03", 1, 1)]
    features = api.json("/api/v1/features")["rows"]
    assert [(r["server"], r["feature"], r["first_minute"]) for r in features] == [
        ("lic01", "F", "2026-03-02T09:00:00Z"), ("lic02", "F", "2026-03-02T09:15:00Z")]
    for path in ("sizing", "overuse", "forecast", "ud"):
        assert api.get(f"/api/v1/{path}")[0] == 200, path


def test_bad_filters_are_named(api: Api) -> None:
    code, _, body = api.get("/api/v1/usage?feature=NOPE")
    assert code == 404 and "no feature 'NOPE' is stored (stored: F)" in body
    code, _, body = api.get("/api/v1/holders?feature=F&minute=2026-03-02T09:20:00Z&org=other")
    assert code == 404 and "no organisation 'other'" in body
    code, _, body = api.get("/api/v1/usage?server=lic09")
    assert code == 404 and "lic01, lic02" in body
    for path, words in [("/api/v1/usage?from=2026-13-01", "from '2026-13-01'"),
                        ("/api/v1/usage?from=2026-03-03&to=2026-03-02", "to must be after from"),
                        ("/api/v1/usage?level=server", "level"), ("/api/v1/usage?format=xml", "format"),
                        ("/api/v1/usage?tz=Mars/Olympus", "tz"), ("/api/v1/holders?feature=F&minute=soon", "minute"),
                        ("/api/v1/holders?feature=F", "minute"),
                        ("/api/v1/vendor-view?window_start=25:00", "window"),
                        ("/api/v1/users?top=0", "top")]:
        code, _, body = api.get(path)
        assert code == 422 and words in body, (path, body)
    # Text that would be SQL is a value like any other.
    code, _, body = api.get("/api/v1/usage?feature=F%27%20OR%201%3D1%20--")
    assert code == 404 and "no feature" in body


def test_serve_refuses_to_start_open_to_others(data: Path, tmp_path: Path) -> None:
    proc = _cli(data, "serve", "--port", str(free_port()), tokens="")
    assert proc.returncode == 2 and "set LICTEL_API_TOKENS" in proc.stdout + proc.stderr
    proc = _cli(data, "serve", "--no-auth", "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode == 2 and "loopback address only" in proc.stdout + proc.stderr
    proc = _cli(data, "serve", "--port", str(free_port()), tokens="short")
    assert proc.returncode == 2 and "shorter than 16 characters" in proc.stdout + proc.stderr
    proc = _cli(tmp_path / "nothing-here", "serve", "--no-auth", "--port", str(free_port()))
    assert proc.returncode == 2 and "no lictel data in" in proc.stdout + proc.stderr


def test_a_repeated_question_is_answered_from_memory_but_never_without_a_token(api: Api) -> None:
    path = "/api/v1/usage?level=pool&granularity=hour&feature=F"
    code, first_headers, first = api.get(path)
    code2, headers, again = api.get(path)
    assert code == code2 == 200 and again == first
    assert headers.get("x-lictel-cache") == "hit" and headers["content-type"] == first_headers["content-type"]
    assert api.get(path, token=None)[0] == 401
    assert api.get(path, token="wrong-token-of-the-same-size!")[0] == 401
