"""Every Kafka client lictel makes connects to a secured cluster: TLS and SASL/PLAIN.

The secured cluster is the embedded broker behind a front (tests/integration/secure_front.py) that
lets nothing through without TLS and a SASL login. A whole `lictel run` through it (producer, topic
administration, stream worker with Faust and its catch-up reader, sink, progress readers) must give
exactly the rows of the batch recompute; the front counts the logins. A client with a wrong
password, without SASL or without TLS gets a clear error.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lictel.broker import EmbeddedBroker, free_port
from lictel.config import TANSU_GROUP
from lictel.engine import compute_rows
from lictel.events import event_to_line
from lictel.export import minute_row, to_csv
from producers.simulate import SimSpec, simulate
from tests.integration.conftest import Lictel
from tests.integration.secure_front import SecureFront, make_certificates

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test certificates")]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureFront, Path]]:
    tmp = tmp_path_factory.mktemp("secured")
    ca, cert, key = make_certificates(tmp / "tls")
    port = free_port()
    with EmbeddedBroker(tmp / "broker", advertised=f"127.0.0.1:{port}") as broker:
        front = SecureFront(("127.0.0.1", broker.port), port, cert, key, {"lictel-svc": "s3cret pass"}).start()
        try:
            yield front, ca
        finally:
            front.stop()


def _env(tmp: Path, front: SecureFront, ca: Path, **change: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    env |= {f"LICTEL_{k.upper()}": str(v) for k, v in TANSU_GROUP.items()}
    env |= {"LICTEL_DATA_DIR": str(tmp / "data"), "LICTEL_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:10]}",
            "LICTEL_PARTITIONS": "2", "COLUMNS": "200",
            "LICTEL_KAFKA_BOOTSTRAP": f"127.0.0.1:{front.port}", "LICTEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LICTEL_KAFKA_SASL_MECHANISM": "PLAIN", "LICTEL_KAFKA_SASL_USERNAME": "lictel-svc",
            "LICTEL_KAFKA_SASL_PASSWORD": "s3cret pass", "LICTEL_KAFKA_SSL_CAFILE": str(ca)}
    for k, v in change.items():
        if v:
            env[f"LICTEL_{k.upper()}"] = v
        else:
            env.pop(f"LICTEL_{k.upper()}", None)
    return env


def test_a_whole_run_through_tls_and_sasl_is_exact(secured: tuple[SecureFront, Path], tmp_path: Path) -> None:
    front, ca = secured
    events = list(simulate(SimSpec(users=60, servers=2, days=1, seed=5)))
    path = tmp_path / "sim.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in events))
    before = sum(n for k, n in front.counts.items() if k.startswith("authenticated:"))
    lictel = Lictel(tmp_path / "data", _env(tmp_path, front, ca))
    lictel("run", "--jsonl", str(path), timeout=240)
    expected = compute_rows(events)
    for level in ("pool", "estate"):
        got = lictel("export", "usage", "--level", level, "--format", "csv").stdout
        assert got.count("\n") > 100
        assert got == to_csv(minute_row(r) for r in expected if r.level == level), f"{level} rows differ"
    logins = sum(n for k, n in front.counts.items() if k.startswith("authenticated:")) - before
    # The producer, the admin client, the stream worker's consumer and producer, the sink's consumer and
    # producer and the run's progress readers each log in, on the bootstrap and on the broker.
    assert logins >= 8, front.counts
    assert front.counts["no sasl"] == 0 and front.counts["wrong password"] == 0, front.counts


@pytest.mark.parametrize(("change", "words"), [
    ({"kafka_sasl_password": "not it"}, "SaslAuthenticationFailed"),
    ({"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "", "kafka_sasl_username": "",
      "kafka_sasl_password": ""}, "cannot reach Kafka"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": ""}, "cannot reach Kafka"),
    ({"kafka_ssl_cafile": ""}, "cannot reach Kafka"),  # the test CA is not one the system trusts
])
def test_a_client_the_cluster_refuses_says_so(secured: tuple[SecureFront, Path], tmp_path: Path,
                                              change: dict[str, str], words: str) -> None:
    front, ca = secured
    path = tmp_path / "one.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in list(simulate(SimSpec(users=2, servers=1, days=1)))[:5]))
    lictel = Lictel(tmp_path / "data", _env(tmp_path, front, ca, **change))
    proc = lictel("produce", "jsonl", str(path), check=False, timeout=120)
    assert proc.returncode == 2 and words in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize(("change", "words"), [
    ({"kafka_sasl_mechanism": ""}, "needs kafka_sasl_mechanism"),
    ({"kafka_sasl_password": ""}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "LICTEL_KAFKA_SSL_CAFILE=/nonexistent/ca.pem: cannot read it"),
    ({"kafka_topic_config": "min.insync.replicas"}, "is not key=value"),
])
def test_a_setting_that_cannot_work_is_named_before_connecting(secured: tuple[SecureFront, Path], tmp_path: Path,
                                                               change: dict[str, str], words: str) -> None:
    front, ca = secured
    path = tmp_path / "one.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in list(simulate(SimSpec(users=2, servers=1, days=1)))[:5]))
    proc = Lictel(tmp_path / "data", _env(tmp_path, front, ca, **change))("produce", "jsonl", str(path), check=False)
    assert proc.returncode == 2 and words in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_topics_are_created_with_their_configs_or_named_when_creating_is_off(lictel: Lictel,
                                                                              tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text("".join(event_to_line(e) + "\n" for e in list(simulate(SimSpec(users=2, servers=1, days=1)))[:5]))
    refused = lictel("produce", "jsonl", str(path), "--no-create-topics", check=False)
    prefix = lictel.env["LICTEL_TOPIC_PREFIX"]
    assert refused.returncode == 2 and f"topics missing on {lictel.env['LICTEL_KAFKA_BOOTSTRAP']}: {prefix}.events" \
        in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    lictel.env["LICTEL_KAFKA_TOPIC_CONFIG"] = "retention.ms=-1"
    made = lictel("produce", "jsonl", str(path))
    assert made.stdout.startswith("sent 5 events"), made.stdout
    # Once they exist, creating is not needed.
    again = lictel("produce", "jsonl", str(path), "--no-create-topics")
    assert again.stdout.startswith("sent 5 events"), again.stdout
