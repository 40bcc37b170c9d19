"""The ClickHouse sink: minute rows/s from the usage topic into chDB.

1,000,000 minute rows (in Avro batches of 1,000, as the stream emits them) are produced into a real
Tansu broker; then the sink runs in this process and is timed from its first message to the last
row acknowledged by chDB. Run: .venv/bin/python bench/sink_rows.py [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _report import record
from aiokafka import AIOKafkaProducer

from lictel.broker import EmbeddedBroker, ensure_topics
from lictel.config import Settings
from lictel.engine import MinuteRow
from lictel.serde import Serde
from lictel.timeutil import MINUTE_US, parse_ts
from sinks.clickhouse import ClickHouseSink


async def bench(settings: Settings, bootstrap: str, n: int) -> tuple[float, float]:
    await ensure_topics(bootstrap, settings)
    serde = Serde()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 << 20, linger_ms=5)
    await producer.start()
    t0 = parse_ts("2026-01-01T00:00:00Z")
    batch: list[MinuteRow] = []
    for i in range(n):
        batch.append(MinuteRow("pool", "acme", f"lic{i % 5:02d}", f"F{i % 100:02d}", t0 + (i // 100) * MINUTE_US,
                               i % 50, i % 7, (i % 50) * 30_000_000, i % 3, i % 2, 0, i % 11 == 0, 0, 0))
        if len(batch) == 1000:
            p = (i // 1000) % settings.partitions
            await producer.send(settings.topic("usage"), serde.encode_usage(p, None, batch), partition=p)
            batch = []
    await producer.flush()
    await producer.stop()
    sink = ClickHouseSink(settings, bootstrap)
    task = asyncio.create_task(sink.run())
    while sink.stats.usage_rows < n:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    done = time.monotonic()
    sink.stop.set()
    await task
    count = sink.client.query("SELECT count() FROM lictel.usage_minute").result_rows[0][0]
    assert count == n, count
    assert sink.stats.first_message_at is not None
    return sink.stats.first_message_at, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        settings = Settings(data_dir=Path(tmp) / "data", **broker.client_settings(), topic_prefix="bench")  # type: ignore[arg-type]
        first, done = asyncio.run(bench(settings, broker.bootstrap, args.rows))
    took = done - first
    record("sink", "Sink: minute rows into chDB", "bench/sink_rows.py", [
        f"- {args.rows:,} minute rows read from the usage topic (Avro batches of 1,000), inserted in "
        f"batches of >= {settings.sink_batch_rows:,} rows, offsets committed after each insert",
        f"- **{args.rows / took:,.0f} rows/s** ({took:.1f} s from the first message to the last row acknowledged)",
    ])


if __name__ == "__main__":
    main()
