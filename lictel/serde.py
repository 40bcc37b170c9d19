"""Avro encoding of every topic's messages: lictel.avrocols for the columnar batches, fastavro for the rest.

Two framings:

- Without a registry: Avro *single-object encoding*: ``C3 01``, the schema's 8-byte CRC-64-AVRO
  fingerprint (little endian), then the body. A reader checks the fingerprint, so bytes written
  with another schema are refused with a clear error instead of being misread.
- With ``LICTEL_SCHEMA_REGISTRY_URL``: the Confluent wire format: ``00``, a 4-byte big-endian
  schema id from the registry (subject ``<topic>-value``), then the body. The registry is reached
  through confluent_kafka's client (:class:`Registry`).

Events travel in batches: one message = one ``LicenseEventBatch``, column by column (one array per
field, text as indexes into the batch's distinct values): decoding a column of a thousand small
integers costs a fraction of a thousand records, and the checks of :mod:`lictel.limits` run once per
distinct value instead of once per event. Batches written as records (versions 1 and 2) are still
read, as written.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import schemas
from lictel import avrocols
from lictel.avrocols import Unsupported, compile_reader, compile_writer
from lictel.config import Settings, safe_url
from lictel.engine import MinuteRow
from lictel.errors import SchemaError
from lictel.events import SESSION_VENDOR, Event

_SINGLE = b"\xc3\x01"
T = TypeVar("T", bound=tuple[Any, ...])


class Codec:
    """Encode/decode one record type. Timestamps are integer microseconds on both sides."""

    def __init__(self, name: str, registry: Registry | None = None, subject: str | None = None,
                 as_written: Callable[[Any], bool] | None = None) -> None:
        self.name = name
        self.schema = schemas.load(name, logical=False)
        self.fingerprint = _fingerprint(schemas.load(name))
        # Messages written with a released older version are read through schema resolution; or,
        # for a writer schema of a shape this version no longer has (``as_written``), as written.
        self._as_written = as_written or (lambda writer: False)
        self._older: dict[bytes, tuple[Any, Any]] = {}
        for old in schemas.released(name):
            parsed = fastavro.parse_schema(old)
            fp = _fingerprint(parsed)
            if fp != self.fingerprint:
                writer = fastavro.parse_schema(schemas.strip_logical(old))
                self._older[fp] = (writer, self._reader(writer))
        self._registry = registry
        # registry schema id -> (reader schema (None: read as written), whether it is this version's)
        self._by_id: dict[int, tuple[Any, bool]] = {}
        self.subject = subject
        self._schema_id: int | None = None
        # This version's own schema, when a record of arrays, is read and written by avrocols
        # (numbers a column at once); anything else by fastavro.
        self._compiled = compile_reader(self.schema)
        self._writer = compile_writer(self.schema)

    def _header(self) -> bytes:
        if self._registry is None:
            return _SINGLE + self.fingerprint
        if self._schema_id is None:
            self._schema_id = self._registry.schema_id(self.subject or self.name, schemas.expanded(self.name))
        return b"\x00" + struct.pack(">I", self._schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._writer is not None:
            try:
                return self._header() + self._writer(record)
            except Unsupported:
                pass  # fastavro encodes it, or says why it cannot
        buf = io.BytesIO()
        buf.write(self._header())
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def _reader(self, writer: Any) -> Any:
        """The reader schema for ``writer``: None (read as written) for this version's own schema,
        the fast path, and for a shape this version no longer has."""
        return None if writer == self.schema or self._as_written(writer) else self.schema

    def decode(self, data: bytes, bounds: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
        """The record of ``data``. ``bounds``, when given, gets the extremes of the arrays of numbers
        where the reader has them at no cost (lictel.avrocols: this version's columnar batches)."""
        if data[:2] == _SINGLE:
            offset = 10
            if data[2:10] == self.fingerprint:
                writer, reader, own = self.schema, None, True
            else:
                older = self._older.get(data[2:10])
                if older is None:
                    raise SchemaError(
                        f"message was written with another schema (fingerprint {data[2:10].hex()}, "
                        f"expected {self.fingerprint.hex()} for {self.name}); upgrade the reader or "
                        "route the topic to a compatible consumer")
                (writer, reader), own = older, False
        elif data[:1] == b"\x00" and len(data) >= 5:
            if self._registry is None:
                raise SchemaError("message uses the Confluent wire format but no "
                                  "LICTEL_SCHEMA_REGISTRY_URL is set")
            offset = 5
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer = self._registry.parsed(schema_id)
            known = self._by_id.get(schema_id)
            if known is None:
                known = self._by_id[schema_id] = (self._reader(writer), writer == self.schema)
            reader, own = known
        else:
            raise SchemaError(f"not an Avro single-object or Confluent message (starts {data[:4].hex()})")
        try:
            if own and self._compiled is not None and len(data) >= avrocols.WORTH_BYTES:
                return self._compiled(data, offset, bounds)
            result = fastavro.schemaless_reader(io.BytesIO(data[offset:]), writer, reader)
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise SchemaError(f"corrupt {self.name} message: {exc}") from exc
        if not isinstance(result, dict):
            raise SchemaError(f"corrupt {self.name} message: not a record")
        return result


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))[::-1]


class Registry:
    """lictel's schemas in a Confluent Schema Registry, through confluent_kafka's client (basic auth
    in the URL or ``LICTEL_SCHEMA_REGISTRY_BASIC_AUTH``, TLS with a CA and a client certificate).

    A writer looks its schema's id up under the topic's subject; it registers the schema only with
    ``auto_register`` (``LICTEL_SCHEMA_REGISTRY_AUTO_REGISTER``), since production registries let
    only a deployment step write subjects: ``lictel schemas register``."""

    def __init__(self, url: str, *, basic_auth: str = "", cafile: Path | None = None, certfile: Path | None = None,
                 keyfile: Path | None = None, auto_register: bool = True) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": url, "timeout": 10, "max.retries": 2}
        if basic_auth:
            conf["basic.auth.user.info"] = basic_auth
        for key, path in (("ssl.ca.location", cafile), ("ssl.certificate.location", certfile),
                          ("ssl.key.location", keyfile)):
            if path is not None:
                conf[key] = str(path)
        self.where = safe_url(url)
        try:
            self.client = SchemaRegistryClient(conf)
        except (ValueError, TypeError, OSError) as exc:
            raise SchemaError(f"schema registry {self.where}: {exc}") from exc
        self.auto_register = auto_register
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Any] = {}

    @classmethod
    def of(cls, settings: Settings) -> Registry | None:
        if not settings.schema_registry_url:
            return None
        return cls(settings.schema_registry_url, basic_auth=settings.schema_registry_basic_auth.get_secret_value(),
                   cafile=settings.schema_registry_ssl_cafile, certfile=settings.schema_registry_ssl_certfile,
                   keyfile=settings.schema_registry_ssl_keyfile, auto_register=settings.schema_registry_auto_register)

    def _failed(self, what: str, exc: Exception) -> SchemaError:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if isinstance(exc, SchemaRegistryError):
            if exc.http_status_code in (401, 403):
                return SchemaError(f"schema registry {self.where} refused {what} (HTTP {exc.http_status_code}): check "
                                   f"the credentials (LICTEL_SCHEMA_REGISTRY_BASIC_AUTH or KEY:SECRET@ in the URL) "
                                   f"and what they may do")
            return SchemaError(f"schema registry {self.where} failed on {what}: {exc.error_message} "
                               f"(HTTP {exc.http_status_code}, error {exc.error_code})")
        return SchemaError(f"cannot reach the schema registry {self.where} ({what}): {type(exc).__name__}: {exc}")

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (the registry checks its compatibility); its id."""
        from confluent_kafka.schema_registry import Schema

        try:
            sid = int(self.client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))
        except Exception as exc:
            raise self._failed(f"registering {subject}", exc) from exc
        self._ids[subject] = sid
        return sid

    def lookup(self, subject: str, schema: dict[str, Any]) -> int | None:
        """The id of ``schema`` under ``subject``, or None when it is not registered there."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            sid = self.client.lookup_schema(subject, Schema(json.dumps(schema), "AVRO")).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise self._failed(f"looking up {subject}", exc) from exc
        except Exception as exc:
            raise self._failed(f"looking up {subject}", exc) from exc
        return None if sid is None else int(sid)

    def schema_id(self, subject: str, schema: dict[str, Any]) -> int:
        """The id a writer frames its messages with."""
        if subject not in self._ids:
            if self.auto_register:
                return self.register(subject, schema)
            sid = self.lookup(subject, schema)
            if sid is None:
                raise SchemaError(
                    f"this lictel's schema is not registered under subject {subject} in the schema registry "
                    f"{self.where}: register lictel's schemas once with `lictel schemas register` (credentials that "
                    f"may write subjects), or set LICTEL_SCHEMA_REGISTRY_AUTO_REGISTER=true")
            self._ids[subject] = sid
        return self._ids[subject]

    def parsed(self, schema_id: int) -> Any:
        if schema_id not in self._schemas:
            try:
                text = self.client.get_schema(schema_id).schema_str
            except Exception as exc:
                raise self._failed(f"fetching schema id {schema_id}", exc) from exc
            if text is None:
                raise SchemaError(f"schema registry {self.where} answered no schema for id {schema_id}")
            self._schemas[schema_id] = fastavro.parse_schema(schemas.strip_logical(json.loads(text)))
        return self._schemas[schema_id]


class Serde:
    """The codecs of every lictel topic, framed as the settings say."""

    def __init__(self, registry: Registry | None = None, topics: dict[str, str] | None = None) -> None:
        reg = registry
        topics = topics or {}
        self.registry = registry

        def codec(name: str, topic: str) -> Codec:
            return Codec(name, reg, f"{topics.get(topic, topic)}-value")

        self.events = Codec("LicenseEventBatch", reg, f"{topics.get('events', 'events')}-value",
                            as_written=_record_batch)
        self.usage = Codec("UsageBatch", reg, f"{topics.get('usage', 'usage')}-value", as_written=_record_batch)
        self.sessions = codec("SessionEventBatch", "sessions")
        self.dead = codec("DeadLetter", "deadletter")
        self.codecs = (self.events, self.sessions, self.usage, self.dead)

    @classmethod
    def of(cls, settings: Settings) -> Serde:
        """The codecs for these settings' registry and topic names."""
        return cls(Registry.of(settings),
                   {t: settings.topic(t) for t in ("events", "sessions", "usage", "deadletter")})

    def encode_events(self, events: Iterable[Event], prev: dict[str, int] | None = None) -> bytes:
        """A ``LicenseEventBatch``; ``prev``: the batch's ``prev`` map (schemas/LicenseEventBatch.avsc)."""
        return self.events.encode({"columns": event_columns(events), "prev": prev or {}})

    def decode_events(self, data: bytes) -> list[Event]:
        return self.decode_events_prev(data)[0]

    def decode_events_prev(self, data: bytes) -> tuple[list[Event], dict[str, int]]:
        """The events of a batch and its ``prev`` map (empty when written by an older producer)."""
        cols, prev = self.decode_event_columns(data)
        return events_of(cols), prev

    def decode_event_columns(self, data: bytes) -> tuple[dict[str, list[Any]], dict[str, int]]:
        """A batch as one list of values per ``Event`` field (text resolved) and ``strings`` (its
        distinct text values, for checks that need each once: :func:`lictel.limits.columns_clean`),
        and the batch's ``prev`` map. ``bounds``, when the reader had them: the smallest and largest
        value of numeric fields, by field name (a dict, not a list, under that key)."""
        bounds: dict[str, tuple[int, int]] = {}
        record = self.events.decode(data, bounds)
        if "columns" in record:
            found = {k.removeprefix("columns."): v for k, v in bounds.items()}
            cols = _resolve(record["columns"], found)
            cols["bounds"] = found  # type: ignore[assignment]
            return cols, record.get("prev") or {}
        rows = record["events"]  # written as records (versions 1 and 2)
        cols = {f: [e[f] for e in rows] for f in Event._fields}
        cols["strings"] = list({v for f in (*TEXT_COLUMNS, *OPTIONAL_COLUMNS) for v in cols[f] if v is not None})
        return cols, record.get("prev") or {}

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
        return self.usage.encode({"partition": partition, "final_upto": final_upto, "columns": usage_columns(rows),
                                  "stream": stream})

    def decode_usage(self, data: bytes) -> tuple[int, int | None, list[MinuteRow]]:
        partition, final_upto, _, cols = self.decode_usage_columns(data)
        return partition, final_upto, tuples_of(MinuteRow, [cols[f] for f in MinuteRow._fields])

    def decode_usage_columns(self, data: bytes) -> tuple[int, int | None, str, dict[str, list[Any]]]:
        """A UsageBatch's partition, final mark, input stream, and its rows as one list of values
        per ``MinuteRow`` field (text resolved; rows of before licenses charged with their charged
        figures: :func:`with_charged`)."""
        d = self.usage.decode(data)
        if "columns" in d:
            cols = _resolve_columns(d["columns"], MinuteRow._fields, USAGE_TEXT, (), "UsageBatch")
        else:  # written as records (versions 1 to 3)
            rows = [with_charged(r) for r in d["rows"]]
            cols = {f: [r.get(f, MinuteRow._field_defaults.get(f)) for r in rows] for f in MinuteRow._fields}
        return d["partition"], d["final_upto"], d.get("stream", "events"), cols

    def encode_dead(self, record: dict[str, Any]) -> bytes:
        return self.dead.encode(record)

    def decode_dead(self, data: bytes) -> dict[str, Any]:
        return self.dead.decode(data)


#: The text fields of an event stored as indexes into a batch's ``strings``; the optional ones are -1
#: for null.
TEXT_COLUMNS = ("org", "server", "vendor", "feature", "action", "user", "host", "source")
OPTIONAL_COLUMNS = ("handle", "reason")
USAGE_TEXT = ("level", "org", "server", "feature", "dup_group", "source")


def _record_batch(writer: Any) -> bool:
    """A batch written as an array of records (LicenseEventBatch versions 1 and 2, UsageBatch 1 to
    3): read as written."""
    return any(f["name"] in ("events", "rows") for f in writer.get("fields", ()))


def event_columns(events: Iterable[Event]) -> dict[str, list[Any]]:
    """The ``columns`` record of a LicenseEventBatch (schemas/LicenseEventBatch.avsc)."""
    return _columns(events if isinstance(events, list) else list(events), Event._fields, TEXT_COLUMNS,
                    OPTIONAL_COLUMNS)


def _resolve(cols: dict[str, list[Any]], bounds: dict[str, tuple[int, int]]) -> dict[str, list[Any]]:
    """Decoded LicenseEventBatch ``columns`` as one list of values per Event field, plus ``strings``."""
    out = _resolve_columns(cols, Event._fields, TEXT_COLUMNS, OPTIONAL_COLUMNS, "LicenseEventBatch", bounds)
    out["strings"] = cols["strings"]
    return out


def _resolve_columns(cols: dict[str, list[Any]], fields: Sequence[str], text_fields: Sequence[str],
                     optional: Sequence[str], name: str,
                     bounds: dict[str, tuple[int, int]] | None = None) -> dict[str, list[Any]]:
    """Decoded columns with their text indexes resolved (``optional`` ones: -1 is null); a malformed
    batch (columns of different lengths, an index outside ``strings``) is a SchemaError.
    ``bounds``: the extremes of columns the reader knew (the others are found here)."""
    bounds = bounds or {}
    strings = cols["strings"]
    n = len(cols[fields[0]])
    out: dict[str, list[Any]] = {}
    text = [*strings, None]  # -1: null
    for f in fields:
        col = cols[f]
        if len(col) != n:
            raise SchemaError(f"corrupt {name} message: column {f} has {len(col)} values, {fields[0]} has {n}")
        if f in text_fields or f in optional:
            low, high = bounds.get(f) or ((min(col), max(col)) if col else (0, -1))
            if low < (-1 if f in optional else 0) or high >= len(strings):
                raise SchemaError(f"corrupt {name} message: column {f} points outside the batch's "
                                  f"{len(strings)} strings")
            col = list(map(text.__getitem__, col))
        out[f] = col
    return out


def _columns(items: Sequence[tuple[Any, ...]], fields: Sequence[str], text_fields: Sequence[str],
             optional: Sequence[str] = ()) -> dict[str, list[Any]]:
    """Tuples as one list per field, text as indexes into ``strings`` (-1: a null ``optional``)."""
    if not items:
        return {"strings": [], **{f: [] for f in fields}}
    cols = dict(zip(fields, map(list, zip(*items, strict=True)), strict=True))
    table: dict[str, int] = {}
    index = table.setdefault
    for f in text_fields:
        if None in cols[f]:  # else the encoder would name the field 'strings'
            raise ValueError(f"{f} is null: only {', '.join(optional) or 'no field'} may be")
        cols[f] = [index(v, len(table)) for v in cols[f]]
    for f in optional:
        cols[f] = [-1 if v is None else index(v, len(table)) for v in cols[f]]
    cols["strings"] = list(table)
    return cols


def usage_columns(rows: Sequence[MinuteRow]) -> dict[str, list[Any]]:
    """The ``columns`` record of a UsageBatch (schemas/UsageBatch.avsc)."""
    return _columns(rows, MinuteRow._fields, USAGE_TEXT)


def tuples_of(cls: type[T], columns: Sequence[Sequence[Any]]) -> list[T]:
    """One ``cls`` (a NamedTuple) per position of ``columns``, given in ``cls``'s field order: one
    tuple each, without ``_make``'s checks (the columns are of equal length, or this raises)."""
    if columns and len({len(c) for c in columns}) > 1:
        raise ValueError(f"{cls.__name__} columns of different lengths: {sorted({len(c) for c in columns})}")
    return list(map(tuple.__new__, repeat(cls), zip(*columns, strict=False)))  # lengths checked above


def events_of(cols: dict[str, list[Any]]) -> list[Event]:
    """The events of :meth:`Serde.decode_event_columns`'s columns."""
    return tuples_of(Event, [cols[f] for f in Event._fields])


def with_charged(r: dict[str, Any]) -> dict[str, Any]:
    """A decoded UsageRow with its charged figures: rows written before licenses charged existed (-1)
    were computed under no rule, so charged = checkouts."""
    if r.get("charged_peak", -1) < 0:
        r["charged_peak"], r["charged_low"], r["charged_license_us"] = r["peak"], r["low"], r["license_us"]
    return r


def session_event(d: dict[str, Any]) -> Event:
    """A decoded ``SessionEvent`` record as the Event the engine takes."""
    return Event(d["event_id"], d["ts"], d["org"], d["site"], SESSION_VENDOR, d["feature"], d["action"],
                 d["user"], d["device"], d["session_key"] or None, 1, None, d["source"], d["seq"])
