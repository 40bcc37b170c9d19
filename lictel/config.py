"""Settings: one immutable, validated object; every field documented beside its default.

Every setting is read from the environment with the prefix ``LICTEL_`` (``LICTEL_DATA_DIR``,
``LICTEL_KAFKA_BOOTSTRAP``, ...). Drivers are chosen by URL: an unset Kafka bootstrap means the
embedded Tansu broker; an unset ClickHouse URL means chDB in ``<data_dir>/warehouse``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lictel import dupgroup
from lictel.dupgroup import DupRules
from lictel.engine import SessionRule
from lictel.timeutil import US, zone

# Consumer-group timing where no setting says otherwise. The embedded (Tansu) broker answers a
# JoinGroup after half the session timeout, holds every static member's SyncGroup 3 s more, and
# counts a member's silence from its JoinGroup request: the first heartbeat after the SyncGroup must
# come within the other half. 10 s and dynamic membership leave 4 s of margin (6 s with static ids
# evicted a member at nearly every join: a rebalance every 7 s). A static id buys nothing there,
# as the broker keys members by member id. On Kafka: its default 45 s session, and static ids, so a
# restarted worker takes its place again without moving a partition.
TANSU_GROUP: dict[str, object] = {"group_session_timeout_s": 10.0, "group_heartbeat_s": 1.0, "group_static": False}
KAFKA_GROUP: dict[str, object] = {"group_session_timeout_s": 45.0, "group_heartbeat_s": 3.0, "group_static": True}



def safe_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what a message may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

class Settings(BaseSettings):
    """Every knob of lictel. Construct with overrides: ``Settings(data_dir=...)``."""

    model_config = SettingsConfigDict(env_prefix="LICTEL_", frozen=True, extra="forbid")

    data_dir: Path = Field(Path("lictel-data"), description="Where chDB, checkpoints and the embedded broker's address live.")
    org: str = Field("acme", description="Organisation name stamped on simulated events.")
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port] of a Kafka cluster; unset = the embedded Tansu broker.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS: Confluent Cloud, MSK, Strimzi).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL): PLAIN (Confluent Cloud API keys), SCRAM-SHA-256/512 (MSK, Strimzi) or OAUTHBEARER.")
    kafka_sasl_username: str | None = Field(None, description="SASL user (PLAIN, SCRAM): a Confluent Cloud API key, a SCRAM user.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (PLAIN, SCRAM): a Confluent Cloud API secret, a SCRAM password.")
    kafka_oauth_token_url: str | None = Field(None, description="OAUTHBEARER: the OAuth 2 token endpoint, asked with the client-credentials grant.")
    kafka_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: the client id at the token endpoint.")
    kafka_oauth_client_secret: SecretStr = Field(SecretStr(""), description="OAUTHBEARER: the client secret at the token endpoint.")
    kafka_oauth_scope: str | None = Field(None, description="OAUTHBEARER: the scope to ask the token endpoint for, if it needs one.")
    kafka_oauth_token_file: Path | None = Field(None, description="OAUTHBEARER: a file holding the token, read again at every authentication (a token a sidecar renews); instead of the token URL.")
    kafka_ssl_cafile: Path | None = Field(None, description="PEM file of the CA certificates that signed the brokers' (beside the system's trusted ones).")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate, for brokers that require mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate (unset: it is in the certificate file).")
    kafka_ssl_key_password: SecretStr = Field(SecretStr(""), description="Password of the private key, if it is encrypted.")
    kafka_ssl_check_hostname: bool = Field(True, description="Check that a broker's certificate names the host connected to.")
    kafka_client_id: str = Field("lictel", description="Client id every Kafka client sends (broker logs, quotas, ACL audit).")
    kafka_replication_factor: int = Field(1, ge=1, le=32, description="Replicas of each topic lictel creates (Faust's included): 3 on a production cluster (Confluent Cloud and MSK across 3 zones need 3).")
    kafka_topic_config: str = Field("", description="Configs of the topics lictel creates, key=value comma-separated, e.g. min.insync.replicas=2 (docs/deploy.md).")
    kafka_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] | None = Field(None, description="Compression of what producers send; unset = lz4 on a Kafka cluster, none on the embedded broker.")
    kafka_create_topics: bool = Field(True, description="Create missing topics at start (false, or --no-create-topics: a cluster whose ACLs forbid it; create the topics of docs/deploy.md first).")
    clickhouse_url: str | None = Field(None, description="http(s)://user:pass@host:8123 of ClickHouse; unset = chDB in <data_dir>/warehouse.")
    clickhouse_database: str = Field("lictel", description="ClickHouse database that holds lictel's tables.")
    schema_registry_url: str | None = Field(None, description="Confluent Schema Registry URL (https://KEY:SECRET@host works too); unset = Avro single-object encoding.")
    schema_registry_basic_auth: SecretStr = Field(SecretStr(""), description="Schema Registry basic auth as KEY:SECRET (Confluent Cloud's API key), instead of credentials in the URL.")
    schema_registry_ssl_cafile: Path | None = Field(None, description="PEM CA certificates of the Schema Registry (beside the system's trusted ones).")
    schema_registry_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for a Schema Registry that asks for mutual TLS.")
    schema_registry_ssl_keyfile: Path | None = Field(None, description="The client certificate's private key (PEM).")
    schema_registry_auto_register: bool = Field(False, description="Register lictel's schemas on first use; off = they must be registered (lictel schemas register), as production registries expect.")
    topic_prefix: str = Field("lictel", description="Prefix of every topic name (<prefix>.events, .sessions, .usage, .late, .deadletter, .progress).")
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of the events and usage topics: the most stream workers that can share work.")
    lateness_s: float = Field(60.0, ge=0, description="How far behind the newest event of a server an event may arrive and still count on time.")
    source_idle_timeout_s: float = Field(300.0, gt=0, description="A server silent this long (wall clock) stops holding back estate minutes.")
    batch_events: int = Field(1000, ge=1, description="Events per Kafka message on the events topic.")
    linger_ms: int = Field(200, ge=0, description="Longest a producer waits to fill a batch.")
    heartbeat_s: float = Field(5.0, gt=0, description="Live producers send a HEARTBEAT to every partition this often.")
    sink_batch_rows: int = Field(10_000, ge=1, description="The sink inserts once this many rows are buffered...")
    sink_flush_s: float = Field(1.0, gt=0, description="...or once the oldest buffered row is this old.")
    raw_ttl_days: int = Field(0, ge=0, description="Keep raw events this many days in ClickHouse; 0 keeps them forever.")
    state_evict_s: float = Field(3600.0, gt=0, description="Stream workers drop a pool that holds nothing from their state after this much quiet event time (its next event makes it anew, with the same rows).")
    snapshot_s: float = Field(5.0, gt=0, description="Stream workers checkpoint each partition's engine this often; recovery replays the events since.")
    stream_store: str = Field("memory://", description="Faust table store: memory:// or rocksdb:// (state survives restarts either way via changelogs).")
    sessions_unit: Literal["device", "user"] = Field("device", description="Session exports imply one license per distinct client device with a session (device) or per user (user).")
    sessions_disconnected_holds: bool = Field(True, description="A disconnected session keeps its implied license until it ends (false: it frees it).")
    license_models: str = Field("", description="Per-feature license model overrides, FEATURE=ud|concurrent, comma-separated; otherwise _UD is user/device and anything else concurrent.")
    dup_group: str = Field("", description="DUP_GROUP rules, FEATURE=RULE comma-separated (* = every feature; RULE: NONE, SITE, U, H, UH, UHD, ...); a feature named here overrides its license files.")
    dup_group_licenses: str = Field("", description="ORG/FEATURE=RULE from imported license files; lictel run/up fill it in from the warehouse at start.")
    tz: str = Field("UTC", description="Time zone (IANA) of the days, hours and times reports and exports speak of; reports take --tz too.")
    max_ahead_s: float = Field(86400.0, gt=0, description="Events stamped more than this after the wall clock are dead letters (a damaged date, or a clock far ahead).")
    max_source_gap_days: float = Field(366.0, gt=0, description="An event this many days or more from the previous event of its source is a dead letter (a damaged year).")
    group_session_timeout_s: float | None = Field(None, ge=6, le=1800, description="Consumer-group session timeout of stream workers and sink: a member silent this long is dropped and its partitions move; unset = 10 on the embedded broker, 45 on Kafka (docs/operations.md, 'Consumer groups').")
    group_heartbeat_s: float | None = Field(None, gt=0, description="Consumer-group heartbeat interval, under a third of the session timeout; unset = 1 on the embedded broker, 3 on Kafka.")
    group_static: bool | None = Field(None, description="Static membership: --worker-id/--sink-id become the group instance id, so a restart within the session timeout moves no partition; unset = on with Kafka, off on the embedded broker.")
    log_level: str | None = Field(None, pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$", description="Log level of every long-running component (DEBUG, INFO, WARNING, ERROR); unset = INFO, WARNING for stream workers.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or json: one object per line (ts, level, component, logger, message, exc) for a log shipper.")
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on this port (0 = any free port); unset = off.")
    metrics_host: str = Field("127.0.0.1", description="The address the Prometheus metrics listen on (0.0.0.0: every interface, for a Prometheus on another machine).")
    alerts_file: Path | None = Field(None, description="A rules file (TOML, docs/alerts.md): the sink evaluates the rules on final minutes as it stores them and delivers alerts by webhook; unset = no alerts.")
    serve_port: int | None = Field(None, ge=1, le=65535, description="lictel up: the sink, which owns the warehouse, also serves the dashboard and API on this port (live data); unset = off.")
    serve_host: str = Field("127.0.0.1", description="The address the dashboard and API of lictel up listen on.")
    serve_no_auth: bool = Field(False, description="lictel up: serve without tokens (loopback addresses only).")
    api_cache: bool = Field(True, description="lictel serve: answer a repeated question from memory while the stored data is unchanged.")
    api_tokens: SecretStr = Field(SecretStr(""), description="Bearer tokens `lictel serve` accepts, comma-separated (each compared in constant time); none = serve refuses to start unless --no-auth.")

    @field_validator("kafka_bootstrap", "clickhouse_url", "schema_registry_url", "kafka_sasl_mechanism",
                     "kafka_sasl_username", "kafka_oauth_token_url", "kafka_oauth_client_id", "kafka_oauth_scope",
                     "kafka_oauth_token_file", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                     "kafka_compression", "schema_registry_ssl_cafile", "schema_registry_ssl_certfile",
                     "schema_registry_ssl_keyfile", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("dup_group", "dup_group_licenses")
    @classmethod
    def _rules_parse(cls, value: str) -> str:
        dupgroup.parse(value)  # a clear error now rather than in a worker
        return value

    @field_validator("tz")
    @classmethod
    def _tz_known(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _kafka_auth_complete(self) -> Settings:
        protocol, mech = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol.startswith("SASL_"):
            if mech is None:
                raise ValueError(f"kafka_security_protocol {protocol} needs kafka_sasl_mechanism (PLAIN, "
                                 "SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
            if mech == "OAUTHBEARER":
                if self.kafka_oauth_token_file is None and not (self.kafka_oauth_token_url and
                                                                self.kafka_oauth_client_id):
                    raise ValueError("kafka_sasl_mechanism OAUTHBEARER needs kafka_oauth_token_file, or "
                                     "kafka_oauth_token_url with kafka_oauth_client_id and kafka_oauth_client_secret")
            elif not self.kafka_sasl_username or not self.kafka_sasl_password.get_secret_value():
                raise ValueError(f"kafka_sasl_mechanism {mech} needs kafka_sasl_username and kafka_sasl_password")
        elif mech is not None:
            raise ValueError(f"kafka_sasl_mechanism {mech} needs kafka_security_protocol SASL_SSL or SASL_PLAINTEXT "
                             f"(it is {protocol})")
        if protocol not in ("SSL", "SASL_SSL") and (self.kafka_ssl_cafile or self.kafka_ssl_certfile):
            raise ValueError(f"kafka_ssl_cafile and kafka_ssl_certfile need kafka_security_protocol SSL or SASL_SSL "
                             f"(it is {protocol})")
        if protocol != "PLAINTEXT" and self.kafka_bootstrap is None:
            raise ValueError(f"kafka_security_protocol {protocol} needs kafka_bootstrap: the embedded broker is "
                             "plaintext on loopback")
        return self

    @model_validator(mode="after")
    def _registry_complete(self) -> Settings:
        auth = self.schema_registry_basic_auth.get_secret_value()
        if auth and ":" not in auth:
            raise ValueError("schema_registry_basic_auth must be KEY:SECRET")
        if self.schema_registry_url is None:
            if auth or self.schema_registry_ssl_cafile or self.schema_registry_ssl_certfile:
                raise ValueError("the schema_registry_* settings need schema_registry_url")
            return self
        if not self.schema_registry_url.startswith(("http://", "https://")):
            raise ValueError(f"schema_registry_url must start with http:// or https:// (it is "
                             f"{self.schema_registry_url.split('@')[-1]!r})")
        if auth and "@" in self.schema_registry_url.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("schema_registry_url carries credentials and schema_registry_basic_auth is set: give one")
        if self.schema_registry_ssl_keyfile and not self.schema_registry_ssl_certfile:
            raise ValueError("schema_registry_ssl_keyfile needs schema_registry_ssl_certfile")
        for name in ("schema_registry_ssl_cafile", "schema_registry_ssl_certfile", "schema_registry_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> Settings:
        if self.group_heartbeat_s is not None and self.group_session_timeout_s is not None \
                and self.group_heartbeat_s * 3 > self.group_session_timeout_s:
            raise ValueError(f"group_heartbeat_s ({self.group_heartbeat_s}) must be under a third of "
                             f"group_session_timeout_s ({self.group_session_timeout_s})")
        return self

    def with_group_defaults(self) -> Settings:
        """These settings with the consumer-group timing filled in for where they run: the embedded
        broker if ``kafka_bootstrap`` is unset, else Kafka (a Tansu broker of your own: set the
        ``TANSU_GROUP`` values). Call before the bootstrap is resolved."""
        defaults = TANSU_GROUP if self.kafka_bootstrap is None else KAFKA_GROUP
        update = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return self.model_copy(update=update) if update else self

    def group_instance(self, role: str, number: int | None) -> str | None:
        """The static group instance id of process ``number`` of ``role`` (``stream``, ``sink``):
        None without a number or without static membership."""
        return f"{self.topic_prefix}-{role}-{number}" if number is not None and self.group_static else None

    @property
    def dup_rules(self) -> DupRules:
        return DupRules.from_text(self.dup_group, self.dup_group_licenses)

    @property
    def lateness_us(self) -> int:
        return int(self.lateness_s * US)

    @property
    def idle_timeout_us(self) -> int:
        return int(self.source_idle_timeout_s * US)

    @property
    def session_rule(self) -> SessionRule:
        return SessionRule(self.sessions_unit, self.sessions_disconnected_holds)

    def topic(self, name: str) -> str:
        """Full topic name: ``events``, ``sessions``, ``usage``, ``late``, ``deadletter``, ``progress``."""
        return f"{self.topic_prefix}.{name}"

    @property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"


def settings_help() -> list[tuple[str, str, str]]:
    """(env var, default, description) of every setting, for ``lictel config``."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = "" if info.default is None else str(info.default)
        rows.append((f"LICTEL_{name.upper()}", default, info.description or ""))
    return rows


def group_options(settings: Settings) -> dict[str, int]:
    """aiokafka consumer-group timing (milliseconds) of ``settings``, defaults filled in for where
    they run (see :meth:`Settings.with_group_defaults`)."""
    s = settings.with_group_defaults()
    assert s.group_session_timeout_s is not None and s.group_heartbeat_s is not None
    return {"session_timeout_ms": int(s.group_session_timeout_s * 1000),
            "heartbeat_interval_ms": int(s.group_heartbeat_s * 1000)}
