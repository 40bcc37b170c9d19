"""ClickHouse storage per year, measured from our own rows, for sizing a deployment.

Loads the report benchmark's data (bench/reports.py: every minute of 20 features x 5 servers, with
noise, so compression is no better than real data's) for --days days into chDB, merges it, and
reads the compressed size and row count of every table from system.parts. Then scales to a year of
--servers x --features (pool rows grow with servers x features, estate and day rows with features,
raw events with checkouts: the report data has ~2,000 users checking out on ~45 % of days).

Run: .venv/bin/python bench/storage.py [--days 90] [--servers 100] [--features 200]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _report import record
from reports import FEATURES, SERVERS, load

from lictel.config import Settings
from lictel.warehouse import connect, migrate

GIB = 1024 ** 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--features", type=int, default=200)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lictel-bench-storage-"))
    settings = Settings(data_dir=base)
    client = connect(settings)
    db = settings.clickhouse_database
    try:
        migrate(client, settings)
        t = time.perf_counter()
        load(client, db, args.days)
        for table in ("usage_minute", "usage_daily", "raw_events", "ud_daily"):
            client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
        print(f"loaded and merged {args.days} days in {time.perf_counter() - t:.0f} s", flush=True)
        parts = client.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts "
            "WHERE database = {db:String} AND active GROUP BY table ORDER BY table", parameters={"db": db}).result_rows
        split = client.query(
            f"SELECT level, count() FROM {db}.usage_minute GROUP BY level").result_rows
    finally:
        client.close()
        shutil.rmtree(base, ignore_errors=True)
    levels = dict(split)
    year = 365 / args.days
    pool_scale = args.servers * args.features / (SERVERS * FEATURES)
    feature_scale = args.features / FEATURES
    lines = [f"{args.days} days of {FEATURES} features x {SERVERS} servers, merged (OPTIMIZE FINAL); scaled to one "
             f"year of {args.features} features x {args.servers} servers (every pool reporting every minute: "
             "an upper bound, a real estate has idle pools):", "",
             "| table | rows measured | bytes/row (compressed) | ratio | rows per year, scaled | GiB per year |",
             "|---|---:|---:|---:|---:|---:|"]
    total = 0.0
    for table, rows, comp, raw in parts:
        if not rows:
            continue
        if table == "usage_minute":
            pool = levels.get("pool", 0)
            scaled = (pool * pool_scale + (rows - pool) * feature_scale) * year
        elif table in ("usage_daily",):
            scaled = rows * pool_scale * year  # mostly pool days, like the minutes
        elif table in ("raw_events", "ud_daily"):
            scaled = rows * year  # events follow users, not servers x features
        else:
            scaled = rows * year
        gib = scaled * comp / rows / GIB
        total += gib
        lines.append(f"| {table} | {rows:,} | {comp / rows:.2f} | {raw / max(comp, 1):.1f} | {scaled:,.0f} "
                     f"| {gib:.1f} |")
    lines += ["", f"In all about {total:.0f} GiB per year of compressed data per replica (raw events scale with "
              "checkouts: multiply their line by your checkouts per year / the measured rows x 365 / days)."]
    record("storage", "ClickHouse storage per year", "bench/storage.py", lines)


if __name__ == "__main__":
    main()
