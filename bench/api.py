"""The API and the pages over the report benchmark's year (bench/reports.py: 52.6M pool rows,
20 features x 5 servers, 664,399 raw events) in chDB, through a real `lictel serve` process.

Each route is asked 20 times after a warm-up, one request at a time, as a dashboard would ask it,
first of a server that computes every answer afresh (LICTEL_API_CACHE=false), then of one that
answers a repeated question from memory while the data is unchanged (the default); the 50th and
95th percentile of the answer time are recorded (target: p95 <= 300 ms). The estate and a feature
page are opened in Debian Chromium (Playwright) three times each, computed afresh; their first
contentful paint is recorded (target for the estate page: <= 1 s).

Run: .venv/bin/python bench/api.py [--days 365] [--dir PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _report import record
from reports import load

from lictel.broker import free_port
from lictel.config import Settings
from lictel.warehouse import connect, migrate

TOKEN = "bench-token-0123456789abcdef"
ROUTES = [
    ("features", "/api/v1/features"),
    ("usage: estate, a feature, days of a year", "/api/v1/usage?level=estate&granularity=day&feature=FEAT_03_CCU"),
    ("usage: estate, a feature, hours of 10 days",
     "/api/v1/usage?level=estate&granularity=hour&feature=FEAT_03_CCU&from=2025-12-27&to=2026-01-06"),
    ("usage: estate, a feature, minutes of 12 hours",
     "/api/v1/usage?level=estate&granularity=minute&feature=FEAT_03_CCU&from=2026-01-05T06:00:00Z"
     "&to=2026-01-05T18:00:00Z"),
    ("peak", "/api/v1/peak"),
    ("holders at a minute", "/api/v1/holders?feature=FEAT_03_CCU&minute=2026-01-05T10:00:00Z"),
    ("users: license-hours, 30 days", "/api/v1/users?from=2025-12-07&to=2026-01-06"),
    ("distinct users and hosts per day, 30 days, a feature",
     "/api/v1/distinct?feature=FEAT_03_CCU&from=2025-12-07&to=2026-01-06"),
    ("denials", "/api/v1/denials"),
    ("sizing", "/api/v1/sizing"),
    ("overuse", "/api/v1/overuse"),
    ("forecast", "/api/v1/forecast"),
    ("ud, a feature", "/api/v1/ud?feature=FEAT_17_UD"),
    ("vendor-view, 30 days", "/api/v1/vendor-view?from=2025-12-07&to=2026-01-06"),
    ("alerts", "/api/v1/alerts"),
]


def get(base: str, path: str) -> float:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - t


def wait_up(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("lictel serve did not start") from None
            time.sleep(0.5)


def paints(base: str, paths: list[str], runs: int = 3) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {p: [] for p in paths}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("LICTEL_CHROMIUM", "/usr/bin/chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        ctx = b.new_context(viewport={"width": 1366, "height": 860},
                            extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
        for _ in range(runs):
            for path in paths:
                page = ctx.new_page()
                page.goto(base + path, wait_until="load")
                fcp = page.evaluate("""() => new Promise((done) => new PerformanceObserver((list) => {
                    const e = list.getEntriesByName('first-contentful-paint')[0]; if (e) done(e.startTime);
                }).observe({type: 'paint', buffered: true}))""")
                out[path].append(float(fcp) / 1000)
                page.close()
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="Keep the generated warehouse.")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    base_dir = args.dir or Path(tempfile.mkdtemp(prefix="lictel-bench-api-"))
    settings = Settings(data_dir=base_dir)
    if not (base_dir / "warehouse").is_dir():
        client = connect(settings)
        migrate(client, settings)
        print(f"loading {args.days} days into {base_dir} ...", flush=True)
        print(load(client, settings.clickhouse_database, args.days), flush=True)
        client.command(f"OPTIMIZE TABLE {settings.clickhouse_database}.usage_minute FINAL")
        client.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    env |= {"LICTEL_DATA_DIR": str(base_dir), "LICTEL_API_TOKENS": TOKEN}
    results: dict[str, list[tuple[str, str, float, float]]] = {}
    fcp: dict[str, list[float]] = {}
    try:
        for mode in ("afresh", "from memory"):
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "lictel.cli", "serve", "--port", str(port)],
                                      env=env | {"LICTEL_API_CACHE": "false" if mode == "afresh" else "true"})
            base = f"http://127.0.0.1:{port}"
            try:
                wait_up(base, server)
                results[mode] = []
                for name, path in ROUTES:
                    get(base, path)  # warm-up
                    times = sorted(get(base, path) for _ in range(args.runs))
                    p50, p95 = statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)]
                    results[mode].append((name, path, p50, p95))
                    print(f"{mode}: {name}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms", flush=True)
                if mode == "afresh":
                    fcp = paints(base, ["/", "/feature?org=acme&feature=FEAT_03_CCU"])
                    for path, values in fcp.items():
                        print(f"first contentful paint {path}: {', '.join(f'{v:.2f} s' for v in values)}", flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base_dir, ignore_errors=True)
    cold, warm = results["afresh"], {n: (p50, p95) for n, _, p50, p95 in results["from memory"]}
    over = [n for n, _, _, p95 in cold if p95 > 0.3]
    lines = [f"`lictel serve` over the year of bench/reports.py ({args.days} days, 20 features x 5 servers), "
             f"{args.runs} requests per route after a warm-up, one at a time, timed by the client; computed "
             "afresh (LICTEL_API_CACHE=false) and answered from memory (the default, while the data is unchanged):",
             "", "| route | request | afresh p50 ms | afresh p95 ms | from memory p95 ms |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | `{p}` | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {warm[n][1] * 1000:.0f} |"
              for n, p, p50, p95 in cold]
    lines += ["", "First contentful paint in Chromium, computed afresh (three loads each): " + "; ".join(
        f"`{p}` {', '.join(f'{v:.2f} s' for v in vs)}" for p, vs in fcp.items()) + ".", "",
        f"Routes over the 300 ms p95 target when computed afresh: {', '.join(over) if over else 'none'}."]
    record("api", "The API and the pages over a year", "bench/api.py", lines)
    print(json.dumps({"over_target": over}))


if __name__ == "__main__":
    main()
