"""Every report over one year of minute usage: 20 features x 5 servers (~52.6M pool rows) in chDB.

The rows are generated inside chDB (INSERT ... SELECT FROM numbers()): a working-day and daily
rhythm, slow growth and noise, per feature. The estate rows (20 features x 525,600 minutes) are the
per-minute sums of the pool rows, as the stream would have written them. Raw events (checkouts,
check-ins and denials of ~2,000 users, which the denial, dormant, chargeback and user/device
reports read) are generated too; their count is printed. Then each report runs as `lictel report`
calls it, on the whole year, and is timed (best of three runs after one warm-up).

Run: .venv/bin/python bench/reports.py [--days 365] [--dir PATH] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _report import record

from lictel import rollups
from lictel.config import Settings
from lictel.entitlements import parse_contract_csv, store
from lictel.reports.chargeback import chargeback
from lictel.reports.common import Scope
from lictel.reports.compliance import compliance
from lictel.reports.denials import denials
from lictel.reports.dormant import dormant
from lictel.reports.forecast import forecast
from lictel.reports.heatmap import heatmap
from lictel.reports.overuse import overuse
from lictel.reports.sizing import sizing
from lictel.reports.summary import peak_summary
from lictel.reports.usage import usage
from lictel.timeutil import parse_ts
from lictel.ud import ud_report
from lictel.vendor.diff import vendor_diff
from lictel.vendor.files import Sample
from lictel.vendor.view import vendor_view
from lictel.warehouse import connect, migrate

FEATURES = 20
SERVERS = 5
START = "2025-01-06 00:00:00"  # a Monday


def load(client: Any, db: str, days: int) -> dict[str, int]:
    minutes = days * 1440
    n = minutes * FEATURES * SERVERS
    feature = "concat('FEAT_', leftPad(toString(number % 20), 2, '0'), if(number % 20 >= 16, '_UD', '_CCU'))"
    t0 = time.perf_counter()
    client.command(
        f"INSERT INTO {db}.usage_minute (level, source, org, server, feature, minute, peak, low, license_us, "
        f"checkouts, checkins, forced_releases, denials, queued, orphans, version) "
        f"SELECT 'pool', 'license', 'acme', concat('lic0', toString(intDiv(number, 20) % 5)), {feature}, m, p, "
        f"toUInt32(greatest(toInt64(p) - toInt64(cityHash64(number) % 3), 0)), toInt64(p) * 55000000, "
        f"cityHash64(number, 1) % 4, cityHash64(number, 2) % 4, 0, cityHash64(number, 3) % 50 = 0, 0, 0, 1 "
        f"FROM (SELECT number, toDateTime('{START}', 'UTC') + intDiv(number, 100) * 60 AS m, "
        f"toUInt32(greatest(0, (2 + number % 20) * if(toDayOfWeek(m) <= 5, 1.0, 0.25) "
        f"* (0.15 + 0.85 * greatest(0, sin(pi() * (toHour(m) - 6) / 13))) * (1 + intDiv(number, 100) / 1051200) "
        f"+ (cityHash64(number) % 3) - 1)) AS p FROM numbers({n}))",
        settings={"max_insert_threads": 2, "max_threads": 2})
    t1 = time.perf_counter()
    client.command(
        f"INSERT INTO {db}.usage_minute (level, source, org, server, feature, minute, peak, low, license_us, "
        f"checkouts, checkins, forced_releases, denials, queued, orphans, version) "
        f"SELECT 'estate', 'license', org, '', feature, minute, sum(peak), sum(low), sum(license_us), "
        f"sum(checkouts), sum(checkins), 0, sum(denials), 0, 0, 1 FROM {db}.usage_minute "
        f"WHERE level = 'pool' GROUP BY org, feature, minute", settings={"max_threads": 2})
    t2 = time.perf_counter()
    # Raw events: each of 2,000 users checks out one feature on ~45 % of days for a few hours.
    client.command(
        f"INSERT INTO {db}.raw_events (event_id, ts, org, server, vendor, feature, action, user, host, handle, "
        f"count, reason, source, seq) "
        f"SELECT concat('e', toString(number), a), t, 'acme', concat('lic0', toString(u % 5)), 'CITRIX', "
        f"concat('FEAT_', leftPad(toString(u % 20), 2, '0'), if(u % 20 >= 16, '_UD', '_CCU')), a, "
        f"concat('user', toString(u)), concat('pc', toString(if(u % 10 = 0, u - u % 30, u))), NULL, 1, "
        f"if(a = 'DENIED', 'Licensed number of users already reached', NULL), 'bench', number * 3 + ai "
        f"FROM (SELECT number, intDiv(number, {days}) AS u, number % {days} AS d, "
        f"arrayJoin([('OUT', 0), ('IN', 1), ('DENIED', 2)]) AS x, x.1 AS a, x.2 AS ai, "
        f"toDateTime64('{START}', 6, 'UTC') + toIntervalDay(d) + toIntervalSecond(28800 + cityHash64(number) % 7200 "
        f"+ if(ai = 1, 3600 + cityHash64(number, 5) % 14400, 0) - if(ai = 2, 60, 0)) AS t "
        f"FROM numbers({2000 * days}) WHERE cityHash64(number, 7) % 100 < 45 AND (ai != 2 OR number % 40 = 0))",
        settings={"max_threads": 2})
    # One large user/device feature straight into its daily states: 20,000 users, each on about
    # half of the days, one device each except every tenth user, who shares one with two others.
    client.command(
        f"INSERT INTO {db}.ud_daily SELECT 'acme', 'LARGE_UD', toDate('{START}') + intDiv(number, 20000) AS day, "
        f"groupUniqArrayState((concat('user', toString(number % 20000)), concat('pc', toString(if(number % 10 = 0, "
        f"number % 20000 - number % 20000 % 30, number % 20000))))), uniqExactState(concat('user', "
        f"toString(number % 20000))), uniqExactState(concat('pc', toString(number % 20000))) "
        f"FROM numbers(20000 * {days}) WHERE cityHash64(number) % 2 = 0 GROUP BY day", settings={"max_threads": 2})
    t3 = time.perf_counter()
    # What the sink does as the stream makes days final: their day rollups (lictel.rollups).
    (last,), = client.query(f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute").result_rows
    rollups.advance(client, db, (int(last) + 60) * 1_000_000)
    t4 = time.perf_counter()
    counts = {
        "pool_rows": client.query(f"SELECT count() FROM {db}.usage_minute WHERE level = 'pool'").result_rows[0][0],
        "estate_rows": client.query(f"SELECT count() FROM {db}.usage_minute WHERE level = 'estate'").result_rows[0][0],
        "raw_events": client.query(f"SELECT count() FROM {db}.raw_events").result_rows[0][0],
        "load_pool_s": round(t1 - t0, 1), "load_estate_s": round(t2 - t1, 1), "load_raw_s": round(t3 - t2, 1),
        "rollup_s": round(t4 - t3, 1),
    }
    lines = ["feature,count,start,expiry,vendor,note"]
    for i in range(FEATURES):
        name = f"FEAT_{i:02d}{'_UD' if i >= 16 else '_CCU'}"
        lines.append(f"{name},{(2 + i) * SERVERS - 3 if i < 16 else 60},2025-01-01,,CITRIX,")
    store(client, db, parse_contract_csv("\n".join(lines) + "\n", org="acme", source="bench-contract.csv"))
    return counts


def timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="Keep the generated warehouse.")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="lictel-bench-reports-"))
    settings = Settings(data_dir=base)
    client = connect(settings)
    db = settings.clickhouse_database
    try:
        migrate(client, settings)
        print(f"loading {args.days} days x {FEATURES} features x {SERVERS} servers into {base} ...", flush=True)
        counts = load(client, db, args.days)
        print(counts, flush=True)
        t = time.perf_counter()
        client.command(f"OPTIMIZE TABLE {db}.usage_minute FINAL")
        merge_s = time.perf_counter() - t
        year = Scope("acme")
        last = (dt.datetime.fromisoformat(START) + dt.timedelta(days=args.days - 1)).date()
        month = Scope("acme", None, parse_ts(f"{last - dt.timedelta(days=29)}T00:00:00Z"),
                      parse_ts(f"{last + dt.timedelta(days=1)}T00:00:00Z"))
        groups = {f"user{u}": f"dept{u % 12}" for u in range(2000)}
        vendor = [Sample("acme", "vendor.csv", k * 16 + i + 2, "csv", "", f"FEAT_{i:02d}_CCU", "",
                         last - dt.timedelta(days=k), count_used_max=30) for k in range(30) for i in range(16)]
        by_server = [Sample("acme", "vendor.csv", k, "csv", f"lic0{k % 5}", f"FEAT_{k // 5 % 16:02d}_CCU", "",
                            last - dt.timedelta(days=k // 80), count_used_max=30) for k in range(2400)]
        reports: list[tuple[str, Callable[[], Any]]] = [
            ("peak summary (lictel report peak)", lambda: peak_summary(client, db)),
            ("usage, by day, estate, a year", lambda: usage(client, db, year, "estate", "day")),
            ("usage, by hour, estate, a year", lambda: usage(client, db, year, "estate", "hour")),
            ("usage, by hour, pool, a year (bulk: 876,000 rows out)", lambda: usage(client, db, year, "pool", "hour")),
            ("sizing, estate, a year", lambda: sizing(client, db, year)),
            ("overuse, a year", lambda: overuse(client, db, year, {})),
            ("denials by feature, a year", lambda: denials(client, db, year)),
            ("denials by user, a year", lambda: denials(client, db, year, by="user")),
            ("dormant, a year", lambda: dormant(client, db, year, {})),
            ("heatmap, a year", lambda: heatmap(client, db, year)),
            ("forecast, a year", lambda: forecast(client, db, year)),
            ("user/device (report ud), a year, all 5 _UD features", lambda: ud_report(client, db, {})),
            ("user/device (report ud), a year, 20,000 users (3.6M user-days)",
             lambda: ud_report(client, db, {}, feature="LARGE_UD")),
            ("user/device (report ud --day --explain), 20,000 users",
             lambda: ud_report(client, db, {}, feature="LARGE_UD", day=last, explain=True)),
            ("chargeback, last 30 days", lambda: chargeback(client, db, month, groups)),
            ("chargeback, a year", lambda: chargeback(client, db, year, groups)),
            ("reconcile-vendor, 30 days x 16 features", lambda: vendor_diff(client, db, "acme", vendor, {})),
            ("compliance, last 30 days", lambda: compliance(client, db, month, {})),
            ("vendor-view, a year, 5 servers x 20 features", lambda: vendor_view(client, db, {})),
            ("vendor-view, last 30 days", lambda: vendor_view(client, db, {}, first=last - dt.timedelta(days=29))),
            ("vendor-diff, 30 days x 5 servers x 16 features", lambda: vendor_diff(client, db, "acme", by_server, {})),
        ]
        results = []
        for name, fn in reports:
            seconds, out = timed(fn)
            rows = len(out.rows) if hasattr(out, "rows") else len(out)
            results.append((name, seconds, rows))
            print(f"{name}: {seconds:.2f} s ({rows} rows)", flush=True)
    finally:
        client.close()
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    worst = max(s for name, s, _ in results if "bulk" not in name)
    lines = [f"{counts['pool_rows']:,} pool rows and {counts['estate_rows']:,} estate rows (one year, "
             f"{FEATURES} features x {SERVERS} servers), {counts['raw_events']:,} raw events; loaded in "
             f"{counts['load_pool_s'] + counts['load_estate_s'] + counts['load_raw_s']:.0f} s, merged "
             f"(OPTIMIZE FINAL) in {merge_s:.0f} s; its day rollups (lictel.rollups, as the sink keeps them) "
             f"written in {counts['rollup_s']:.0f} s. Best of three runs after a warm-up, in this process "
             "(the function `lictel report` calls, without the CLI's start-up):", "",
             "| report | seconds | rows out |", "|---|---:|---:|"]
    lines += [f"| {name} | {s:.2f} | {n:,} |" for name, s, n in results]
    lines += ["", f"Slowest report: {worst:.2f} s (target: every report <= 2 s). The bulk line is an export-sized "
              "answer (every hour of every server for a year); most of its time is moving 876,000 rows out of "
              "chDB into Python."]
    record("reports", "Reports over a year of minute rows", "bench/reports.py", lines)


if __name__ == "__main__":
    main()
