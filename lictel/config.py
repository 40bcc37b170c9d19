"""Settings: one immutable, validated object; every field documented beside its default.

Every setting is read from the environment with the prefix ``LICTEL_`` (``LICTEL_DATA_DIR``,
``LICTEL_KAFKA_BOOTSTRAP``, ...). Drivers are chosen by URL: an unset Kafka bootstrap means the
embedded Tansu broker; an unset ClickHouse URL means chDB in ``<data_dir>/warehouse``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lictel import dupgroup
from lictel.dupgroup import DupRules
from lictel.engine import SessionRule
from lictel.timeutil import US, zone


class Settings(BaseSettings):
    """Every knob of lictel. Construct with overrides: ``Settings(data_dir=...)``."""

    model_config = SettingsConfigDict(env_prefix="LICTEL_", frozen=True, extra="forbid")

    data_dir: Path = Field(Path("lictel-data"), description="Where chDB, checkpoints and the embedded broker's address live.")
    org: str = Field("acme", description="Organisation name stamped on simulated events.")
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port] of a Kafka cluster; unset = the embedded Tansu broker.")
    clickhouse_url: str | None = Field(None, description="http(s)://user:pass@host:8123 of ClickHouse; unset = chDB in <data_dir>/warehouse.")
    clickhouse_database: str = Field("lictel", description="ClickHouse database that holds lictel's tables.")
    schema_registry_url: str | None = Field(None, description="Confluent Schema Registry URL; unset = Avro single-object encoding.")
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
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on this port (0 = any free port); unset = off.")

    @field_validator("kafka_bootstrap", "clickhouse_url", "schema_registry_url", mode="before")
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
