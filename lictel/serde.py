"""Avro encoding of every topic's messages, with fastavro on the hot path.

Two framings:

- Without a registry: Avro *single-object encoding*: ``C3 01``, the schema's 8-byte CRC-64-AVRO
  fingerprint (little endian), then the body. A reader checks the fingerprint, so bytes written
  with another schema are refused with a clear error instead of being misread.
- With ``LICTEL_SCHEMA_REGISTRY_URL``: the Confluent wire format: ``00``, a 4-byte big-endian
  schema id from the registry (subject ``<topic>-value``), then the body.

Events travel in batches: one message = one ``LicenseEventBatch``.
"""

from __future__ import annotations

import io
import json
import struct
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas
from lictel.config import Settings
from lictel.engine import MinuteRow
from lictel.errors import SchemaError
from lictel.events import SESSION_VENDOR, Event

_SINGLE = b"\xc3\x01"


class Codec:
    """Encode/decode one record type. Timestamps are integer microseconds on both sides."""

    def __init__(self, name: str, registry: Registry | None = None, subject: str | None = None) -> None:
        self.name = name
        self.schema = schemas.load(name, logical=False)
        self.fingerprint = _fingerprint(schemas.load(name))
        # Messages written with a released older version are read through schema resolution.
        self._older = {}
        for old in schemas.released(name):
            parsed = fastavro.parse_schema(old)
            fp = _fingerprint(parsed)
            if fp != self.fingerprint:
                self._older[fp] = fastavro.parse_schema(schemas.strip_logical(old))
        self._registry = registry
        self._subject = subject
        self._schema_id: int | None = None

    def _header(self) -> bytes:
        if self._registry is None:
            return _SINGLE + self.fingerprint
        if self._schema_id is None:
            self._schema_id = self._registry.register(self._subject or self.name, schemas.expanded(self.name))
        return b"\x00" + struct.pack(">I", self._schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header())
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:2] == _SINGLE:
            writer = self.schema if data[2:10] == self.fingerprint else self._older.get(data[2:10])
            if writer is None:
                raise SchemaError(
                    f"message was written with another schema (fingerprint {data[2:10].hex()}, "
                    f"expected {self.fingerprint.hex()} for {self.name}); upgrade the reader or "
                    "route the topic to a compatible consumer")
            body = io.BytesIO(data[10:])
        elif data[:1] == b"\x00" and len(data) >= 5:
            if self._registry is None:
                raise SchemaError("message uses the Confluent wire format but no "
                                  "LICTEL_SCHEMA_REGISTRY_URL is set")
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer = self._registry.parsed(schema_id)
            body = io.BytesIO(data[5:])
        else:
            raise SchemaError(f"not an Avro single-object or Confluent message (starts {data[:4].hex()})")
        try:
            result = fastavro.schemaless_reader(body, writer, self.schema)
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise SchemaError(f"corrupt {self.name} message: {exc}") from exc
        if not isinstance(result, dict):
            raise SchemaError(f"corrupt {self.name} message: not a record")
        return result


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))[::-1]


class Registry:
    """The two calls of the Confluent Schema Registry lictel needs, with caching."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Any] = {}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)
        except OSError as exc:
            raise SchemaError(f"schema registry {self.url} failed on {method} {path}: {exc}") from exc

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        if subject not in self._ids:
            answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(schema)})
            self._ids[subject] = int(answer["id"])
        return self._ids[subject]

    def parsed(self, schema_id: int) -> Any:
        if schema_id not in self._schemas:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
            self._schemas[schema_id] = fastavro.parse_schema(schemas.strip_logical(json.loads(answer["schema"])))
        return self._schemas[schema_id]


class Serde:
    """The codecs of every lictel topic, framed as the settings say."""

    def __init__(self, registry_url: str | None = None, topics: dict[str, str] | None = None) -> None:
        reg = Registry(registry_url) if registry_url else None
        topics = topics or {}

        def codec(name: str, topic: str) -> Codec:
            return Codec(name, reg, f"{topics.get(topic, topic)}-value")

        self.events = codec("LicenseEventBatch", "events")
        self.usage = codec("UsageBatch", "usage")
        self.sessions = codec("SessionEventBatch", "sessions")
        self.dead = codec("DeadLetter", "deadletter")

    @classmethod
    def of(cls, settings: Settings) -> Serde:
        """The codecs for these settings' registry and topic names."""
        return cls(settings.schema_registry_url,
                   {t: settings.topic(t) for t in ("events", "sessions", "usage", "deadletter")})

    def encode_events(self, events: Iterable[Event], prev: dict[str, int] | None = None) -> bytes:
        """A ``LicenseEventBatch``; ``prev``: the batch's ``prev`` map (schemas/LicenseEventBatch.avsc)."""
        return self.events.encode({"events": [e._asdict() for e in events], "prev": prev or {}})

    def decode_events(self, data: bytes) -> list[Event]:
        return self.decode_events_prev(data)[0]

    def decode_events_prev(self, data: bytes) -> tuple[list[Event], dict[str, int]]:
        """The events of a batch and its ``prev`` map (empty when written by an older producer)."""
        record = self.events.decode(data)
        return [Event(**e) for e in record["events"]], record.get("prev") or {}

    def encode_sessions(self, events: Iterable[Event], prev: dict[str, int] | None = None) -> bytes:
        """Session events (vendor ``SESSIONS`` inside lictel) as a ``SessionEventBatch``."""
        return self.sessions.encode({"events": [
            {"event_id": e.event_id, "ts": e.ts, "org": e.org, "site": e.server, "feature": e.feature,
             "action": e.action, "session_key": e.handle or "", "user": e.user, "device": e.host,
             "source": e.source, "seq": e.seq} for e in events], "prev": prev or {}})

    def decode_sessions(self, data: bytes) -> list[Event]:
        return self.decode_sessions_prev(data)[0]

    def decode_sessions_prev(self, data: bytes) -> tuple[list[Event], dict[str, int]]:
        record = self.sessions.decode(data)
        return [session_event(d) for d in record["events"]], record.get("prev") or {}

    def encode_usage(self, partition: int, final_upto: int | None, rows: Sequence[MinuteRow],
                     stream: str = "events") -> bytes:
        return self.usage.encode({"partition": partition, "final_upto": final_upto,
                                  "rows": [r._asdict() for r in rows], "stream": stream})

    def decode_usage(self, data: bytes) -> tuple[int, int | None, list[MinuteRow]]:
        d = self.usage.decode(data)
        return d["partition"], d["final_upto"], [_usage_row(r) for r in d["rows"]]

    def encode_dead(self, record: dict[str, Any]) -> bytes:
        return self.dead.encode(record)

    def decode_dead(self, data: bytes) -> dict[str, Any]:
        return self.dead.decode(data)


def with_charged(r: dict[str, Any]) -> dict[str, Any]:
    """A decoded UsageRow with its charged figures: rows written before licenses charged existed (-1)
    were computed under no rule, so charged = checkouts."""
    if r.get("charged_peak", -1) < 0:
        r["charged_peak"], r["charged_low"], r["charged_license_us"] = r["peak"], r["low"], r["license_us"]
    return r


def _usage_row(r: dict[str, Any]) -> MinuteRow:
    return MinuteRow(**with_charged(r))


def session_event(d: dict[str, Any]) -> Event:
    """A decoded ``SessionEvent`` record as the Event the engine takes."""
    return Event(d["event_id"], d["ts"], d["org"], d["site"], SESSION_VENDOR, d["feature"], d["action"],
                 d["user"], d["device"], d["session_key"] or None, 1, None, d["source"], d["seq"])
