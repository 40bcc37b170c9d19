"""The embedded stack and the one-shot job.

:class:`Stack` starts, as separate processes, what ``lictel up`` and ``lictel run`` need: the Tansu
broker (unless ``LICTEL_KAFKA_BOOTSTRAP`` names a cluster), N stream workers (``lictel stream``) and
the ClickHouse sink (``lictel sink``), each logging to ``<data_dir>/logs/``. :func:`run_job` feeds
one input through it and returns once every minute up to the minute of the last input event is
final *and stored*, which it learns from the sink's messages on the progress topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from lictel import kafka
from lictel.broker import EmbeddedBroker, ensure_topics
from lictel.config import Settings
from lictel.errors import BrokerError, LictelError
from lictel.partitioning import partition_name
from lictel.procs import lifeline
from producers.base import EventProducer, ProduceStats

# What aiokafka logs when a group rebalances under a member or the broker has dropped it.
GROUP_CHURN = re.compile(r"rebalanc|UnknownMemberId|member_id was not recognized|will rejoin", re.IGNORECASE)


def group_churn(logs: Path) -> list[str]:
    """Lines of the stream and sink logs under ``logs`` that say a consumer group moved after its
    first join (none may appear while no process is killed or added)."""
    return [f"{log.name}: {line.strip()}" for log in sorted(logs.glob("*.log")) if log.name != "broker.log"
            for line in log.read_text(errors="replace").splitlines() if GROUP_CHURN.search(line)]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    # LICTEL_LOGLEVEL is not a setting but the workers' log level: it reaches them too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_") or k == "LICTEL_LOGLEVEL"}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"LICTEL_{name.upper()}"] = str(value)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def with_license_rules(settings: Settings) -> Settings:
    """``settings`` with the DUP_GROUP rules of the imported license files filled in, read from the
    warehouse now (a changed rule applies from the next start on). A process started by a
    :class:`Stack` already has them. Embedded chDB allows one process, so they are read by a short
    child process before the sink takes the warehouse; a warehouse that cannot be read is reported
    and charged under the configured rules only."""
    if os.environ.get("LICTEL_DUP_GROUP_LICENSES") is not None or settings.dup_group_licenses:
        return settings
    log = logging.getLogger("lictel.pipeline")
    try:
        if settings.clickhouse_url:
            from lictel.entitlements import license_rules
            from lictel.warehouse import open_warehouse

            client = open_warehouse(settings)
            try:
                rules = license_rules(client, settings.clickhouse_database)
            finally:
                client.close()
        else:
            if not settings.warehouse_dir.is_dir() or not any(settings.warehouse_dir.iterdir()):
                return settings  # a new data dir: nothing imported yet
            done = subprocess.run([sys.executable, "-m", "lictel.cli", "entitlements", "rules", "--format", "env"],
                                  env=settings_env(settings), capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise LictelError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                                  f"exit code {done.returncode}")
            rules = done.stdout.strip()
    except (LictelError, OSError, subprocess.TimeoutExpired) as exc:
        log.warning("DUP_GROUP rules of the imported license files not read (%s): features are charged under "
                    "the configured rules only", exc)
        return settings
    return settings.model_copy(update={"dup_group_licenses": rules})


class Stack:
    """Broker (embedded or external), stream workers and sink as child processes."""

    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self.workers = workers
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = settings.data_dir / "logs"

    def start(self) -> Stack:
        # Group timing is decided while we still know whether the broker is embedded.
        self.settings = with_license_rules(self.settings).with_group_defaults()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.bootstrap:
            self.broker = EmbeddedBroker(self.settings.data_dir).start()
            self.bootstrap = self.broker.bootstrap
        update: dict[str, Any] = {"kafka_bootstrap": self.bootstrap}
        if self.settings.metrics_port is None:
            # Every component serves /metrics and /healthz on a free port it writes into its data
            # dir, where `lictel status` finds it.
            update["metrics_port"] = 0
        self.settings = self.settings.model_copy(update=update)
        asyncio.run(ensure_topics(self.bootstrap, self.settings))
        self.start_sink()
        for i in range(self.workers):
            self.start_worker(i)
        return self

    def start_sink(self) -> None:
        self.spawn("sink", ["sink", "--sink-id", "0"])

    def start_worker(self, i: int) -> None:
        self.spawn(f"stream-{i}", ["stream", "--worker-id", str(i)])

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        env, fds = lifeline()
        proc = subprocess.Popen([sys.executable, "-m", "lictel.cli", *args],
                                env=settings_env(self.settings, **env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, pass_fds=fds)
        log.close()
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        """Raise if a child process died."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                tail = _tail(self.logs / f"{name}.log")
                raise LictelError(f"the {name} process exited with code {code}; last log lines:\n{tail}")

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in [n for n in self.procs if n.startswith("stream")]:
            self.stop_process(name)
        self.stop_process("sink")
        data = self.settings.data_dir
        for path in [*data.glob("metrics-*.port"), *data.glob("worker-*/metrics-*.port")]:
            path.unlink(missing_ok=True)  # nothing answers there any more
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class JobResult:
    produce: ProduceStats
    seconds: float
    stored: dict[str, int] = field(default_factory=dict)


async def wait_stored(settings: Settings, bootstrap: str, targets: dict[str, int | None],
                      ends: dict[str, int], *, check: Callable[[], None] = lambda: None,
                      timeout: float = 600.0,
                      on_progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Follow the progress topic until every partition of each input stream in ``targets``
    (``events``, ``sessions``) is final past its target and the sink has stored every message up to
    ``ends`` (``"topic|partition" -> end offset``); then do the same for the late and dead-letter
    topics as they stand at that moment. Returns the stored counts."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka.client_options(settings),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(settings.topic("progress"), 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    final: dict[str, int] = {}
    stored_offsets: dict[str, int] = {}
    stored = {"raw_events": 0, "usage_rows": 0, "dead_letters": 0, "late_events": 0}
    deadline = time.monotonic() + timeout
    parts = [(partition_name(stream, p), target) for stream, target in targets.items() if target is not None
             for p in range(settings.partitions)]
    side_topics_done = False
    try:
        while True:
            done_parts = sum(1 for key, target in parts if final.get(key, -1) >= target)
            done_offsets = all(stored_offsets.get(k, 0) >= end for k, end in ends.items())
            if on_progress is not None:
                on_progress(done_parts, len(parts))
            if done_parts == len(parts) and done_offsets:
                if side_topics_done:
                    return stored
                side_topics_done = True
                for name in ("late", "deadletter"):
                    n = settings.partitions if name == "late" else 1
                    for p, end in (await end_offsets(bootstrap, settings.topic(name), n, settings)).items():
                        ends[f"{settings.topic(name)}|{p}"] = end
                continue
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"timed out after {timeout:.0f} s waiting for the pipeline to store every minute "
                    f"({done_parts}/{len(parts)} partitions final); see the logs in "
                    f"{settings.data_dir / 'logs'}")
            check()
            batches = await consumer.getmany(tp, timeout_ms=200)
            for msgs in batches.values():
                for msg in msgs:
                    info = json.loads(msg.value)
                    for key, f in info.get("final_upto", {}).items():
                        final[key] = max(final.get(key, -1), int(f))
                    for key, off in info.get("offsets", {}).items():
                        stored_offsets[key] = max(stored_offsets.get(key, 0), int(off))
                    for k, v in info.get("stored", {}).items():
                        stored[k] = stored.get(k, 0) + int(v)
    finally:
        await consumer.stop()


def _options(settings: Settings | None) -> dict[str, Any]:
    """The connection options of ``settings`` (none: the embedded broker's plaintext)."""
    return kafka.client_options(settings) if settings is not None else {}


async def end_offsets(bootstrap: str, topic: str, partitions: int,
                      settings: Settings | None = None) -> dict[int, int]:
    """The offset after the last record of each partition of ``topic``.

    Not the broker's answer alone: the embedded broker (Tansu 0.6) answers a ListOffsets with the
    last *batch's* first offset + 1 (10 records in one batch: 1). So the last batch is read from
    there and its last record counts; on Kafka that read finds the last record itself."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        out = {tp.partition: off for tp, off in ends.items()}
        tail = [tp for tp in tps if ends[tp] > 0]
        if tail:
            consumer.assign(tail)
            for tp in tail:
                consumer.seek(tp, ends[tp] - 1)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                got = await consumer.getmany(*tail, timeout_ms=300)
                if not any(got.values()):
                    break  # read to the end of every partition
                for tp, msgs in got.items():
                    if msgs:
                        out[tp.partition] = max(out[tp.partition], msgs[-1].offset + 1)
        return out
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, partitions: int,
                     settings: Settings | None = None) -> dict[int, list[bytes]]:
    """Every message of ``topic``, partition by partition, in order (benchmarks and tests that
    replay a topic through the partition logic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **_options(settings), enable_auto_commit=False,
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        while batch := await consumer.getmany(*tps, timeout_ms=3000):
            for tp, msgs in batch.items():
                log[tp.partition] += [m.value or b"" for m in msgs]
        return log
    finally:
        await consumer.stop()


Feed = Callable[[EventProducer], Awaitable[None]]


async def run_job(stack: Stack, feed: Feed | None, *, sessions_feed: Feed | None = None,
                  source: str = "lictel", timeout: float = 900.0,
                  on_stage: Callable[[str], None] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> JobResult:
    """Produce with ``feed`` (license events) and ``sessions_feed`` (session events), close the
    inputs, and wait until everything is final and stored. ``JobResult.produce`` counts both."""
    settings = stack.settings
    started = time.monotonic()
    marks: dict[str, int | None] = {}
    total = ProduceStats()
    for stream, fn in (("events", feed), ("sessions", sessions_feed)):
        if fn is None:
            continue
        producer = await EventProducer(settings, stack.bootstrap, source=source, stream=stream).start()
        try:
            await fn(producer)
            await producer.close(final=True)
        except BaseException:
            await producer.close(final=False)
            raise
        marks[stream] = producer.closing_mark()
        total.add(producer.stats)
    stack.check()
    if on_stage is not None:
        on_stage("waiting for every minute to be final and stored")
    stored = await wait_input_stored(stack, marks, timeout=timeout, on_progress=on_progress)
    return JobResult(total, time.monotonic() - started, stored)


async def wait_input_stored(stack: Stack, closing_marks: dict[str, int | None], *, timeout: float = 900.0,
                            on_progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """After producers closed with ``closing_marks`` (input stream -> closing mark): wait until
    everything they sent is final and stored."""
    return await wait_closed_inputs(stack.settings, stack.bootstrap, closing_marks, check=stack.check,
                                    timeout=timeout, on_progress=on_progress)


async def wait_closed_inputs(settings: Settings, bootstrap: str, closing_marks: dict[str, int | None], *,
                             check: Callable[[], None] = lambda: None, timeout: float = 900.0,
                             on_progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """:func:`wait_input_stored` for a stack this process did not start (``lictel up`` elsewhere)."""
    ends: dict[str, int] = {}
    targets: dict[str, int | None] = {}
    for stream, mark in closing_marks.items():
        topic = settings.topic(stream)
        for p, off in (await end_offsets(bootstrap, topic, settings.partitions, settings)).items():
            ends[f"{topic}|{p}"] = off
        targets[stream] = None if mark is None else mark - settings.lateness_us
    return await wait_stored(settings, bootstrap, targets, ends, check=check, timeout=timeout,
                             on_progress=on_progress)
