"""Session exports of a virtualisation broker → session events on the sessions topic.

Inputs (the format is recognised from the content):

- **Citrix Monitor OData JSON.** The response of the Monitor Service's ``Sessions`` or
  ``Connections`` entity set, saved as it came: ``{"value": [...]}`` (OData v4 / JSON light),
  ``{"d": {"results": [...]}}`` or ``{"d": [...]}`` (verbose JSON), a bare array, or an array of such
  pages. A *Session* record has ``SessionKey`` and ``StartDate`` (``EndDate`` null while it runs),
  the user as an expanded ``User`` (``Domain``/``UserName`` or ``Upn``) or ``UserName``, and its
  connections as an expanded ``Connections`` array (``$expand=User,Connections``); without them,
  ``ConnectionState`` 2 (Disconnected) with ``ConnectionStateChangeDate`` says when it was left.
  A *Connection* record has ``SessionKey``, ``ClientName`` (the client device), a start
  (``EstablishmentDate``, else ``LogOnStartDate``, ``BrokeringDate`` or ``CreatedDate``) and
  ``DisconnectDate``; with an expanded ``Session`` it also knows the session's start, end and user.
  Without it, a session's end is unknown and it is taken as still running. Times are UTC
  (``…Z``, an offset, a naive time, which Monitor means as UTC, or ``/Date(ms)/``).
- **CSV**, one of two layouts (header row required, column order free, extra columns ignored):
  ``session_key,user,device,ts,event``: one state change per row, ``event`` one of ``logon``,
  ``disconnect``, ``reconnect``, ``logoff``;
  ``session_key,user,device,start,end``: one *connection* per row; a session starts with its first
  row and ends with the end of its last one; the gaps between its rows are disconnected time; an
  empty ``end`` on the last row means the session still runs. Times without an offset are in
  ``--tz``.

Each session becomes LOGON (first connection: its device), DISCONNECT/RECONNECT (each later
connection: possibly another device), LOGOFF. Event ids are ``<source>:<session key>:<n>``, so reading
the same export twice gives the same ids, and because the stream treats each session as a state
machine, an overlapping second export changes nothing. A record that cannot be used goes to the
dead-letter topic with the file, record or line, field and reason, and is counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from lictel.errors import ConfigError, InputError
from lictel.events import DISCONNECT, LOGOFF, LOGON, RECONNECT, SESSION_VENDOR, Event
from lictel.timeutil import to_us
from producers.base import EventProducer

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_CONN_START = ("EstablishmentDate", "LogOnStartDate", "BrokeringDate", "CreatedDate")
_DISCONNECTED = (2, "2", "Disconnected")
_ORDER = {LOGON: 0, DISCONNECT: 1, RECONNECT: 2, LOGOFF: 3}
_CSV_EVENTS = {"logon": LOGON, "disconnect": DISCONNECT, "reconnect": RECONNECT, "logoff": LOGOFF}


@dataclass
class _Conn:
    start: int
    end: int | None
    device: str


@dataclass
class _Session:
    key: str
    user: str = ""
    start: int | None = None
    end: int | None = None
    left_at: int | None = None  # disconnected at (no connection records)
    device: str = ""
    conns: list[_Conn] = field(default_factory=list)
    changes: list[tuple[int, str, str]] = field(default_factory=list)  # CSV event rows: (ts, action, device)


@dataclass
class ExportStats:
    """What one export gave: sessions, connections, events by kind, records skipped and why."""

    files: int = 0
    records: int = 0
    sessions: int = 0
    connections: int = 0
    still_running: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class SessionExportReader:
    """Parses session exports of one broker site into session events (vendor ``SESSIONS``)."""

    def __init__(self, org: str, site: str, feature: str, tz: str = "UTC") -> None:
        for name, value in (("--org", org), ("--site", site), ("--feature", feature)):
            if not value:
                raise ConfigError(f"{name} must not be empty")
        try:
            self.tz = ZoneInfo(tz)
        except Exception as exc:
            raise ConfigError(f"--tz {tz!r} is not an IANA time zone name (e.g. Europe/Berlin)") from exc
        self.org, self.site, self.feature = org, site, feature
        self.stats = ExportStats()

    # ------------------------------------------------------------------ reading

    def read(self, path: Path) -> tuple[list[Event], list[InputError]]:
        """Events of one export file in time order, and the records that could not be used."""
        self.stats.files += 1
        errors: list[InputError] = []
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            if data.lstrip()[:1] in (b"{", b"["):
                err = InputError(f"not UTF-8 ({exc.reason} at byte {exc.start}); save the export as UTF-8",
                                 source=str(path))
                self.stats.skipped["not UTF-8"] += 1
                return [], [err]
            # A CSV: only the lines that are not UTF-8 are lost (each a dead letter), the rest is read.
            text = _decode_lines(data, str(path), errors)
        read = self._read_odata if text.lstrip()[:1] in ("{", "[") else self._read_csv
        sessions = read(path, text, errors)
        events = self._events(path, sessions, errors)
        for err in errors:
            kind = _reason_kind(err.reason)
            self.stats.skipped[f"{err.field} {kind}" if err.field else kind] += 1
        return events, errors

    def _read_odata(self, path: Path, text: str, errors: list[InputError]) -> dict[str, _Session]:
        name = str(path)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(InputError(f"malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                                     source=name, line=exc.lineno))
            return {}
        records = list(_odata_records(doc))
        if not records and not (isinstance(doc, dict) and ("value" in doc or "d" in doc)) and doc != []:
            errors.append(InputError("no OData records found: expected {\"value\": [...]} or {\"d\": {\"results\": "
                                     "[...]}} from the Monitor Service's Sessions or Connections", source=name))
        sessions: dict[str, _Session] = {}
        for n, rec in enumerate(records, 1):
            self.stats.records += 1
            where = f"{name} record {n}"
            try:
                if not isinstance(rec, dict):
                    raise _Bad(None, "not a JSON object")
                if "StartDate" in rec or "Connections" in rec:
                    self._odata_session(rec, sessions)
                elif any(k in rec for k in ("ClientName", *_CONN_START, "DisconnectDate")):
                    self._odata_connection(rec, sessions)
                else:
                    raise _Bad(None, "neither a Session (StartDate) nor a Connection (ClientName, "
                                     "EstablishmentDate); export the Sessions or Connections entity set")
            except _Bad as bad:
                errors.append(InputError(bad.reason, source=where, field=bad.field, raw=_short(rec)))
        return sessions

    def _odata_session(self, rec: dict[str, Any], sessions: dict[str, _Session]) -> None:
        key = _key(rec)
        start = self._ts(rec, "StartDate", required=True)
        end = self._ts(rec, "EndDate")
        left_at = (self._ts(rec, "ConnectionStateChangeDate")
                   if rec.get("ConnectionState") in _DISCONNECTED else None)
        conns = rec.get("Connections")
        if conns is not None and not isinstance(conns, list):
            raise _Bad("Connections", "must be an array (the expanded Connections of the session)")
        if any(not isinstance(c, dict) for c in conns or []):
            raise _Bad("Connections", "holds something that is not a Connection object")
        parsed = [self._conn(c) for c in conns or []]
        sess = sessions.setdefault(key, _Session(key))
        sess.start, sess.end, sess.left_at = start, end, left_at
        sess.user = _odata_user(rec.get("User")) or _text(rec.get("UserName")) or sess.user
        current = rec.get("CurrentConnection")
        if isinstance(current, dict):
            sess.device = _text(current.get("ClientName")) or sess.device
        sess.device = _text(rec.get("ClientName")) or sess.device
        sess.conns.extend(parsed)

    def _odata_connection(self, rec: dict[str, Any], sessions: dict[str, _Session]) -> None:
        key = _key(rec)
        conn = self._conn(rec)
        found = rec.get("Session")
        parent: dict[str, Any] = found if isinstance(found, dict) else {}
        start, end = self._ts(parent, "StartDate"), self._ts(parent, "EndDate")
        sess = sessions.setdefault(key, _Session(key))
        sess.conns.append(conn)
        sess.user = (_odata_user(parent.get("User")) or _text(rec.get("BrokeringUserName"))
                     or _text(rec.get("BrokeringUserUPN")) or sess.user)
        sess.start = start if start is not None else sess.start
        sess.end = end if end is not None else sess.end

    def _conn(self, c: dict[str, Any]) -> _Conn:
        start = None
        for name in _CONN_START:
            start = self._ts(c, name)
            if start is not None:
                break
        if start is None:
            raise _Bad("EstablishmentDate", "a connection needs a start (EstablishmentDate, LogOnStartDate, "
                                            "BrokeringDate or CreatedDate)")
        return _Conn(start, self._ts(c, "DisconnectDate"), _text(c.get("ClientName")))

    def _read_csv(self, path: Path, text: str, errors: list[InputError]) -> dict[str, _Session]:
        name = str(path)
        reader = _CsvRecords(text, name, errors)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "session_key" not in cols or not ({"ts", "event"} <= cols.keys() or "start" in cols):
            errors.append(InputError(
                "not a session export: a CSV needs the header session_key,user,device,ts,event (one state "
                "change per row) or session_key,user,device,start,end (one connection per row); an OData "
                f"export is JSON. Found columns: {', '.join(cols) or 'none'}", source=name, line=1))
            return {}
        events_layout = "event" in cols
        sessions: dict[str, _Session] = {}
        for row in reader:
            line = reader.line_num
            self.stats.records += 1

            def get(col: str, row: dict[str, Any] = row) -> str:
                return (row.get(cols.get(col, col)) or "").strip()

            try:
                key = get("session_key")
                if not key:
                    raise _Bad("session_key", "missing (every row names its session)")
                device = get("device")
                if events_layout:
                    found = _CSV_EVENTS.get(get("event").lower())
                    if found is None:
                        raise _Bad("event", f"{get('event')!r} is not one of logon, disconnect, reconnect, logoff")
                    kind = found
                    stamp = self._parse(get("ts"), "ts")
                    if stamp is None:
                        raise _Bad("ts", "missing")
                    ts = stamp
                else:
                    start = self._parse(get("start"), "start")
                    if start is None:
                        raise _Bad("start", "missing (when the connection began)")
                    conn = _Conn(start, self._parse(get("end"), "end"), device)
                sess = sessions.setdefault(key, _Session(key))
                sess.user = get("user") or sess.user
                if events_layout:
                    sess.changes.append((ts, kind, device))
                else:
                    sess.conns.append(conn)
            except _Bad as bad:
                errors.append(InputError(bad.reason, source=name, line=line, field=bad.field,
                                         raw=",".join(f"{v}" for v in row.values())[:500]))
        if not events_layout:
            for sess in sessions.values():  # connection rows: the session spans them all
                sess.conns.sort(key=lambda c: c.start)
                sess.start = sess.conns[0].start
                last = sess.conns[-1]
                sess.end = last.end
                last.end = None
        return sessions

    # ------------------------------------------------------------------ deriving events

    def _events(self, path: Path, sessions: dict[str, _Session], errors: list[InputError]) -> list[Event]:
        source = f"{self.site}:{path.name}"
        raw: list[tuple[int, str, int, str, str, str]] = []  # ts, key, order, action, device, user
        for key, sess in sessions.items():
            try:
                changes = self._changes(sess)
            except _Bad as bad:
                errors.append(InputError(bad.reason, source=f"{path} session {key}", field=bad.field))
                continue
            self.stats.sessions += 1
            self.stats.connections += len(sess.conns)
            if changes and changes[-1][1] != LOGOFF:
                self.stats.still_running += 1
            for n, (ts, action, device) in enumerate(changes):
                raw.append((ts, key, n, action, device, sess.user))
        raw.sort()
        out = []
        for seq, (ts, key, n, action, device, user) in enumerate(raw):
            out.append(Event(f"{source}:{key}:{n}", ts, self.org, self.site, SESSION_VENDOR, self.feature,
                             action, user, device, key, 1, None, source, seq))
            self.stats.events[action] += 1
        return out

    def _changes(self, sess: _Session) -> list[tuple[int, str, str]]:
        """The session's state changes in order: (ts, action, device)."""
        if sess.changes:
            changes = sorted(sess.changes, key=lambda c: (c[0], _ORDER[c[1]]))
            return changes
        conns = sorted(sess.conns, key=lambda c: c.start)
        start = sess.start if sess.start is not None else (conns[0].start if conns else None)
        if start is None:
            raise _Bad("StartDate", "the session has no StartDate and no connection with a start; expand the "
                                    "Session ($expand=Session) or export Sessions")
        end = sess.end
        if end is not None and end < start:
            raise _Bad("EndDate", "ends before it starts")
        device = conns[0].device if conns else sess.device
        changes = [(start, LOGON, device)]
        if not conns and sess.left_at is not None and end is None:
            changes.append((max(sess.left_at, start), DISCONNECT, device))
        for i, c in enumerate(conns):
            if i:
                changes.append((max(c.start, start), RECONNECT, c.device))
            device = c.device or device
            if c.end is not None and (end is None or c.end < end):
                changes.append((max(c.end, start), DISCONNECT, device))
        if end is not None:
            changes.append((end, LOGOFF, device))
        return changes

    # ------------------------------------------------------------------ time

    def _ts(self, rec: dict[str, Any], name: str, required: bool = False) -> int | None:
        value = rec.get(name)
        if value is None or value == "":
            if required:
                raise _Bad(name, "missing")
            return None
        if not isinstance(value, str):
            raise _Bad(name, f"expected a date string, got {value!r}")
        return self._parse(value, name, naive_utc=True)

    def _parse(self, text: str, name: str, naive_utc: bool = False) -> int | None:
        if not text:
            return None
        m = _MS_DATE.match(text)
        if m:
            ms = int(m.group(1))
            if not -62_135_596_800_000 <= ms <= 253_402_300_799_000:  # years 1 to 9999
                raise _Bad(name, f"{text!r} is not a date (milliseconds outside the years 1 to 9999)")
            return ms * 1000
        try:
            value = dt.datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
        except ValueError:
            raise _Bad(name, f"{text!r} is not a date and time (ISO 8601, e.g. 2026-03-02T08:15:03Z)") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC if naive_utc else self.tz)
        return to_us(value)


def _decode_lines(data: bytes, source: str, errors: list[InputError]) -> str:
    """A CSV export's text, line by line: a line that is not UTF-8 becomes empty (skipped) and a dead
    letter; the line numbers of the rest stay as in the file."""
    out = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            out.append(raw.decode("utf-8-sig" if n == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            errors.append(InputError(f"not UTF-8 ({exc.reason} at byte {exc.start} of the line); the line is "
                                     "skipped", source=source, line=n, raw=raw[:4096].decode("utf-8", "replace")))
            out.append("")
    return "\n".join(out)


class _CsvRecords:
    """A CSV export's rows as dicts, one physical line per record. A damaged line (an unmatched
    quote, a wrong number of fields) is a dead letter and reading goes on with the next line: a
    stray quote must not swallow the records after it."""

    def __init__(self, text: str, source: str, errors: list[InputError]) -> None:
        self._lines = text.splitlines()
        self._source = source
        self._errors = errors
        self.line_num = 0
        self.fieldnames: list[str] = []
        while self.line_num < len(self._lines) and not self.fieldnames:
            self.line_num += 1
            header = self._fields(self._lines[self.line_num - 1])
            self.fieldnames = header or []

    def _fields(self, line: str) -> list[str] | None:
        if not line.strip():
            return None
        try:
            return next(csv.reader([line], strict=True))
        except csv.Error as exc:
            self._errors.append(InputError(f"damaged CSV record ({exc}; an unmatched quote?): skipped",
                                           source=self._source, line=self.line_num, raw=line[:4096]))
            return None

    def __iter__(self) -> Iterator[dict[str, str]]:
        width = len(self.fieldnames)
        while self.line_num < len(self._lines):
            self.line_num += 1
            fields = self._fields(self._lines[self.line_num - 1])
            if fields is None:
                continue
            if len(fields) != width:
                self._errors.append(InputError(
                    f"damaged CSV record: {len(fields)} fields where the header has {width}: skipped",
                    source=self._source, line=self.line_num, raw=self._lines[self.line_num - 1][:4096]))
                continue
            yield dict(zip(self.fieldnames, fields, strict=True))


class _Bad(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _odata_records(doc: Any) -> Iterable[Any]:
    if isinstance(doc, list):
        for item in doc:
            if isinstance(item, dict) and ("value" in item or "d" in item) and "SessionKey" not in item:
                yield from _odata_records(item)  # an array of saved pages
            else:
                yield item
    elif isinstance(doc, dict):
        if isinstance(doc.get("value"), list):
            yield from doc["value"]
        elif "d" in doc:
            d = doc["d"]
            yield from (d.get("results", []) if isinstance(d, dict) else d if isinstance(d, list) else [])


def _key(rec: dict[str, Any]) -> str:
    key = rec.get("SessionKey")
    if key is None or key == "":
        raise _Bad("SessionKey", "missing (every Session and Connection names its session)")
    return str(key)


def _odata_user(user: Any) -> str:
    if not isinstance(user, dict):
        return ""
    name, domain = _text(user.get("UserName")), _text(user.get("Domain"))
    if name:
        return f"{domain}\\{name}" if domain else name
    return _text(user.get("Upn")) or _text(user.get("Sid"))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _short(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False)[:500]
    except (TypeError, ValueError):
        return repr(obj)[:500]


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(";")[0][:60]


async def produce_sessions(producer: EventProducer, paths: list[Path], reader: SessionExportReader,
                           on_progress: Callable[[int], None] | None = None) -> ExportStats:
    """Send every session event of ``paths`` to the sessions topic; dead-letter what is unusable.

    Each file's events go in time order; ``producer`` must have been made with ``stream="sessions"``.
    """
    if producer.stream != "sessions":
        raise ValueError("produce_sessions needs a producer of the sessions stream")
    for path in paths:
        events, errors = reader.read(path)
        for err in errors:
            await producer.dead_letter(err)
        for ev in events:
            await producer.send(ev)
        if on_progress is not None:
            on_progress(path.stat().st_size)
    return reader.stats
