"""The LicenseEvent model and its canonical JSON Lines form (see DESIGN.md, "Events").

An :class:`Event` is an immutable tuple with time in integer microseconds (UTC). It is what the
engine consumes and what travels, in batches, inside Avro messages. ``event_from_json`` is the
one place that validates untrusted input; every problem becomes an :class:`InputError` naming the
field and what to do.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from lictel.errors import InputError
from lictel.limits import value_problem
from lictel.timeutil import iso_us, parse_ts

OUT = "OUT"
IN = "IN"
DENIED = "DENIED"
QUEUED = "QUEUED"
DEQUEUED = "DEQUEUED"
RESTART = "RESTART"
HEARTBEAT = "HEARTBEAT"
#: A license reread (lmreread, or the daily "expired -- rereading"): recorded, releases nothing.
REREAD = "REREAD"
#: A request for a feature the server does not serve (FlexNet UNSUPPORTED, "No such feature
#: exists"): recorded and counted apart; not a denial of a licensed feature, and no usage key.
UNSUPPORTED = "UNSUPPORTED"
# Session state changes from a virtualisation broker's export (SessionEvents, DESIGN.md). They travel
# on their own topic; inside lictel they are Events of vendor SESSION_VENDOR whose ``server`` is the
# broker site, ``host`` the client device and ``handle`` the session key.
LOGON = "LOGON"
LOGOFF = "LOGOFF"
DISCONNECT = "DISCONNECT"
RECONNECT = "RECONNECT"
SESSION_VENDOR = "SESSIONS"
#: The usage series: what license servers logged, and what the sessions imply.
LICENSE_SOURCE = "license"
SESSIONS_SOURCE = "sessions"
SOURCES = (LICENSE_SOURCE, SESSIONS_SOURCE)
ACTIONS = (OUT, IN, DENIED, QUEUED, DEQUEUED, RESTART, REREAD, UNSUPPORTED, HEARTBEAT)
#: Actions recorded in raw events that change no usage row.
RECORDED_ONLY = frozenset({REREAD, UNSUPPORTED})
#: Actions that concern every feature of a server: producers send them to every partition.
BROADCAST = frozenset({RESTART, HEARTBEAT})
#: Actions of a whole vendor daemon: no feature, user or host (null in JSON, empty inside lictel).
SERVER_WIDE = frozenset({RESTART, REREAD})


class Event(NamedTuple):
    """One line of a license server's life. ``ts`` is microseconds since the epoch, UTC."""

    event_id: str
    ts: int
    org: str
    server: str
    vendor: str
    feature: str
    action: str
    user: str
    host: str
    handle: str | None
    count: int  # type: ignore[assignment]  # the field name is the schema's; shadows tuple.count
    reason: str | None
    source: str
    seq: int

    def to_json_dict(self) -> dict[str, Any]:
        """Canonical JSON form (DESIGN.md), ``ts`` as ISO-8601 UTC with microseconds."""
        d = self._asdict()
        d["ts"] = iso_us(self.ts)
        return d


_REQUIRED_STR = ("event_id", "org", "server", "action", "source")
_FIELDS = frozenset(Event._fields)


def event_from_json(obj: object, *, source: str = "", line: int | None = None) -> Event:
    """Validate one decoded JSON object and build an :class:`Event`.

    HEARTBEAT needs only ``event_id``, ``ts``, ``org``, ``server``, ``source``, ``seq``; RESTART and
    REREAD need ``vendor`` too (a daemon restart has no user, host or feature: they may be null
    and are ignored); other actions need ``vendor``, ``feature``, ``user`` and ``host``.
    """

    def bad(field: str | None, reason: str) -> InputError:
        return InputError(reason, source=source, line=line, field=field, raw=_short(obj))

    if not isinstance(obj, dict):
        raise bad(None, f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field (the LicenseEvent fields are listed in DESIGN.md)")
    action = obj.get("action")
    if action not in ACTIONS:
        raise bad("action", f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    needed: tuple[str, ...]
    if action == HEARTBEAT:
        needed = _REQUIRED_STR
    elif action in SERVER_WIDE:
        needed = (*_REQUIRED_STR, "vendor")
    else:
        needed = (*_REQUIRED_STR, "vendor", "feature", "user", "host")
    for name in needed:
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise bad(name, "missing or empty (a non-empty string is required)")
    raw_ts = obj.get("ts")
    if not isinstance(raw_ts, str):
        raise bad("ts", "missing (an ISO-8601 UTC timestamp like 2026-03-02T08:15:03Z is required)")
    try:
        ts = parse_ts(raw_ts)
    except ValueError as exc:
        raise bad("ts", f"bad timestamp {raw_ts!r}: {exc}") from None
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise bad("seq", "missing or not a non-negative integer")
    count = obj.get("count", 1)
    if count is None:
        count = 1
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad("count", f"must be an integer >= 1, got {count!r}")
    for name in ("handle", "reason"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise bad(name, "must be a string or null")
    for name in ("vendor", "feature", "user", "host"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise bad(name, "must be a string")
    server_wide = action in SERVER_WIDE
    event = Event(
        event_id=obj["event_id"],
        ts=ts,
        org=obj["org"],
        server=obj["server"],
        vendor=obj.get("vendor") or "",
        feature="" if server_wide else obj["feature"],
        action=action,
        user="" if server_wide else obj["user"],
        host="" if server_wide else obj["host"],
        handle=None if server_wide else obj.get("handle"),
        count=count,
        reason=obj.get("reason"),
        source=obj["source"],
        seq=seq,
    )
    limit = value_problem(event)  # what storage cannot hold, named with its line
    if limit is not None:
        raise bad(*limit)
    return event


def event_from_line(text: str, *, source: str = "", line: int | None = None) -> Event:
    """Parse one JSON Lines line; malformed JSON becomes an :class:`InputError`."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON ({exc.msg} at column {exc.colno})", source=source,
                         line=line, raw=text[:500]) from None
    return event_from_json(obj, source=source, line=line)


def event_to_line(event: Event) -> str:
    """One canonical JSON line (no trailing newline)."""
    return json.dumps(event.to_json_dict(), separators=(",", ":"), ensure_ascii=False)


def heartbeat(org: str, server: str, ts: int, source: str, seq: int, vendor: str = "") -> Event:
    """A HEARTBEAT: ``source`` promises it has sent every event of ``server`` up to ``ts``.

    ``vendor`` is :data:`SESSION_VENDOR` when ``server`` is a broker site of session events."""
    return Event(f"{source}:hb:{ts}", ts, org, server, vendor, "", HEARTBEAT, "", "", None, 1, None,
                 source, seq)


def _short(obj: object) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False)[:500]
    except (TypeError, ValueError):
        return repr(obj)[:500]
