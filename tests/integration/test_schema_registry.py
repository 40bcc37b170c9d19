"""lictel through a Schema Registry (confluent_kafka's client): TLS, basic auth in the URL (as
Confluent Cloud gives it) or as a setting, schemas registered by `lictel schemas register` and only
looked up by writers, a whole `lictel run` exact in the Confluent wire format, and clear errors for
wrong credentials and unregistered schemas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from lictel.config import Settings
from lictel.errors import SchemaError
from lictel.events import Event
from lictel.serde import Registry, Serde
from tests.integration.conftest import Lictel
from tests.integration.schema_registry import SchemaRegistry
from tests.integration.secure_front import make_certificates

DATA = Path(__file__).parent.parent / "data"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test certificates")]
EV = Event("e1", 1_772_445_600_000_000, "acme", "lic01", "CITRIX", "F", "OUT", "ann", "pc1", "h1", 1, None, "t", 1)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("registry-tls"))


def test_writers_look_up_and_readers_fetch_with_auto_register_only_when_asked() -> None:
    with SchemaRegistry() as reg:
        with pytest.raises(SchemaError, match="lictel schemas register"):
            Serde(Registry(reg.url, auto_register=False)).encode_events([EV])
        data = Serde(Registry(reg.url, auto_register=True)).encode_events([EV])
        assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
        assert reg.counts["register"] == 1
        # Now registered: a writer that may not register finds it, a fresh reader fetches it by id.
        assert Serde(Registry(reg.url, auto_register=False)).encode_events([EV]) == data
        assert Serde(Registry(reg.url)).decode_events(data) == [EV]
        assert reg.counts["fetch"] == 1


def test_tls_and_basic_auth_in_the_url_or_as_a_setting(tls: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, cert, key = tls
    with SchemaRegistry((cert, key), credentials="KEY1:s3cret/+=") as reg:
        host = reg.url.removeprefix("https://")
        in_url = Settings(data_dir=tmp_path, schema_registry_url=f"https://KEY1:s3cret%2F%2B%3D@{host}",
                          schema_registry_ssl_cafile=ca, schema_registry_auto_register=True)
        data = Serde.of(in_url).encode_events([EV])
        as_setting = Settings(data_dir=tmp_path, schema_registry_url=reg.url, schema_registry_ssl_cafile=ca,
                              schema_registry_basic_auth="KEY1:s3cret/+=")
        assert Serde.of(as_setting).decode_events(data) == [EV]
        wrong = as_setting.model_copy(update={"schema_registry_basic_auth": SecretStr("KEY1:nope")})
        with pytest.raises(SchemaError, match=r"HTTP 401.*credentials") as err:
            Serde.of(wrong).encode_events([EV])
        assert "nope" not in str(err.value) and "s3cret" not in str(err.value)
        no_ca = as_setting.model_copy(update={"schema_registry_ssl_cafile": None})
        with pytest.raises(SchemaError, match=r"cannot reach the schema registry .*SSL"):
            Serde.of(no_ca).encode_events([EV])


def test_registry_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KEY:SECRET"):
        Settings(data_dir=tmp_path, schema_registry_url="https://r", schema_registry_basic_auth="nocolon")
    with pytest.raises(ValueError, match="give one"):
        Settings(data_dir=tmp_path, schema_registry_url="https://a:b@r", schema_registry_basic_auth="a:b")
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(data_dir=tmp_path, schema_registry_url="registry:8081")
    with pytest.raises(ValueError, match="need schema_registry_url"):
        Settings(data_dir=tmp_path, schema_registry_basic_auth="a:b")
    with pytest.raises(ValueError, match="not a readable file"):
        Settings(data_dir=tmp_path, schema_registry_url="https://r", schema_registry_ssl_cafile=tmp_path / "no.pem")


def test_a_whole_run_through_a_secured_registry_is_exact(lictel: Lictel, tls: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls
    with SchemaRegistry((cert, key), credentials="svc:p4ss") as reg:
        env = {**lictel.env, "LICTEL_SCHEMA_REGISTRY_URL": reg.url.replace("https://", "https://svc:p4ss@"),
               "LICTEL_SCHEMA_REGISTRY_SSL_CAFILE": str(ca)}
        run = Lictel(lictel.data_dir, env)
        missing = run("schemas", "check", check=False)
        assert missing.returncode == 1 and "NOT registered" in missing.stdout and "schemas register" in missing.stdout
        # A run whose schemas are not registered stops at once and says what to do.
        refused = run("produce", "jsonl", str(DATA / "small.jsonl"), check=False)
        assert refused.returncode == 2 and "lictel schemas register" in refused.stdout + refused.stderr
        registered = run("schemas", "register")
        subjects = [line.split(":")[0] for line in registered.stdout.splitlines()]
        prefix = lictel.env["LICTEL_TOPIC_PREFIX"]
        assert sorted(subjects) == sorted(f"{prefix}.{t}-value" for t in ("events", "sessions", "usage", "deadletter"))
        assert run("schemas", "check").returncode == 0
        reg.writable = False  # from here on, as production: writers only look up
        registrations = reg.counts["register"]
        run("run", "--jsonl", str(DATA / "small.jsonl"), timeout=240)
        assert run("export", "usage", "--level", "pool", "--format", "csv").stdout == \
            (DATA / "small_pool.csv").read_text()
        assert reg.counts["lookup"] >= 4 and reg.counts["fetch"] >= 1 and reg.counts["unauthorised"] == 0
        assert reg.counts["register"] == registrations and reg.counts["denied"] == 0


def test_batches_written_as_records_by_an_older_producer_are_read_through_the_registry() -> None:
    # A producer of version 2 (events as an array of records) registered and wrote its schema; a
    # reader of this version reads that message as written, and its own columnar ones alike.
    import io
    import json

    import fastavro

    import schemas

    v2 = json.loads((Path(schemas.__file__).parent / "history" / "LicenseEventBatch.v2.avsc").read_text())
    with SchemaRegistry() as reg:
        sid = Registry(reg.url).register("lictel.events-value", v2)
        buf = io.BytesIO()
        buf.write(b"\x00" + sid.to_bytes(4, "big"))
        two = [EV, EV._replace(seq=2, event_id="e2")]
        fastavro.schemaless_writer(buf, fastavro.parse_schema(schemas.strip_logical(v2)),
                                   {"events": [e._asdict() for e in two], "prev": {"t": 0}})
        serde = Serde(Registry(reg.url, auto_register=True), {"events": "lictel.events"})
        assert serde.decode_events_prev(buf.getvalue()) == (two, {"t": 0})
        columnar = serde.encode_events([EV])
        assert int.from_bytes(columnar[1:5], "big") != sid
        assert serde.decode_events(columnar) == [EV]
