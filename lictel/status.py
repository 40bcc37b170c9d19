"""What ``lictel status`` reports, and what the sink's ``/healthz`` carries: per component whether
it is up and what it knows; per consumer group its lag; from the warehouse the last final minute
per license server, the dead letters and the late events.

Components are found by their operations endpoints (lictel.metrics): in a data dir the embedded
stack writes their ports (``metrics-sink.port``, ``worker-N/metrics-stream.port``,
``metrics-producer.port``); a deployment names them (``lictel status --endpoint URL``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from lictel import kafka, rollups
from lictel.broker import PARTITIONED
from lictel.config import Settings
from lictel.pipeline import end_offsets


def warehouse_status(client: Any, db: str) -> dict[str, Any]:
    """The last final minute stored per license server (the day rollups, then the minutes after
    their watermark: no scan of the whole history), and the dead letters and late events stored."""
    last = rollups.last_minutes(client, db, source=None)
    (dead,), = client.query(f"SELECT count() FROM {db}.dead_letters").result_rows
    (late,), = client.query(f"SELECT count() FROM {db}.late_events").result_rows
    return {"last_final_minute": {s: _iso(m) for s, m in last.items()}, "dead_letters": int(dead),
            "late_events": int(late)}


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def discover(data_dir: Path) -> dict[str, str]:
    """The endpoints the embedded stack wrote into ``data_dir``: name -> base URL."""
    found = {}
    for path in sorted([*data_dir.glob("metrics-*.port"), *data_dir.glob("worker-*/metrics-*.port")]):
        component = path.stem.removeprefix("metrics-")
        name = f"{component} {path.parent.name.removeprefix('worker-')}" if path.parent != data_dir else component
        try:
            found[name] = f"http://127.0.0.1:{int(path.read_text().strip())}"
        except (OSError, ValueError):
            continue
    return found


def probe(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """A component's ``/healthz``; ``status`` ``down`` with the reason when it does not answer."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:  # 503: failing, with its reasons in the body
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return {"status": "failing", "reason": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"status": "down", "reason": str(getattr(exc, "reason", exc))}


async def group_lag(bootstrap: str, settings: Settings) -> dict[str, dict[str, int]]:
    """Messages each consumer group has yet to commit, per topic: stream workers read the inputs,
    the sink the inputs and every output."""
    inputs = ["events", "sessions"]
    groups = {f"{settings.topic_prefix}-streams": inputs,
              f"{settings.topic_prefix}-sink": [*inputs, "usage", "late", "deadletter"]}
    ends = {}
    for name in dict.fromkeys(n for names in groups.values() for n in names):
        parts = settings.partitions if name in PARTITIONED else 1
        ends[name] = await end_offsets(bootstrap, settings.topic(name), parts, settings)
    out: dict[str, dict[str, int]] = {}
    for group, names in groups.items():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka.client_options(settings), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            lag: dict[str, int] = {}
            for name in names:
                total = 0
                for p, end in ends[name].items():
                    committed = await consumer.committed(TopicPartition(settings.topic(name), p)) or 0
                    total += max(0, end - committed)
                lag[name] = total
            out[group] = lag
        finally:
            await consumer.stop()
    return out


def kafka_lag(bootstrap: str, settings: Settings, timeout: float = 30.0) -> dict[str, dict[str, int]]:
    return asyncio.run(asyncio.wait_for(group_lag(bootstrap, settings), timeout))
