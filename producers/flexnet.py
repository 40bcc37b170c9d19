"""FlexNet (FLEXlm) debug logs → LicenseEvents.

The parser is pure: lines in, :class:`Event`s and :class:`Skipped` records out, so it can be
tested on text and measured without Kafka. :func:`produce_flexnet` feeds its output to a producer.

Line kinds understood (compact form, ``H:MM:SS (DAEMON) message``; ``DAEMON_N`` is a forked copy
of ``DAEMON`` and counts as it):

- ``OUT: "FEATURE" user@host [project] (N licenses)`` and ``IN: ...`` with an optional trailing
  ``(INACTIVE)`` or ``(SHUTDOWN)``; ``DENIED``, ``UNSUPPORTED`` (a denial), ``QUEUED``,
  ``DEQUEUED`` with the reason in the trailing parentheses. User names may contain spaces: the
  user is everything up to the last ``@`` of the user@host part. A ``[project]`` tag becomes the
  checkout's handle, so check-ins match the checkout they close. The verbose form's
  ``^^^ ver user ip pid handle ... ^^^`` block is read too: its client handle becomes the handle.
- Dates: ``TIMESTAMP m/d/yyyy``, lmgrd's ``started on HOST (...) (m/d/yyyy)`` and ``Server's System
  Date and Time: Www Mmm DD YYYY HH:MM:SS`` lines set the date; a time more than 65 minutes earlier
  than the previous line's means midnight passed. Lines before the first date wait for it and are
  dated backwards from it; ``date`` gives it when a log has none.
- Local time: ``tz`` (an IANA zone, default UTC) converts times to UTC; in the hour that repeats
  when daylight saving time ends, a step back of up to an hour is the second pass of that hour.
- Restarts: a vendor daemon's ``Server started on``, ``EXITING DUE TO SIGNAL`` and lmgrd's
  ``DAEMON exited with status`` / ``REStarted DAEMON`` release everything that daemon held (a
  RESTART event); lmgrd's own exit releases every daemon it has seen. A crashed server therefore
  leaves no phantom checkouts.
- A date that goes backwards (logs pasted together newest-first) is reported as a segment out of
  order, with its line number; :func:`produce_flexnet` then sends that file's events in time order.

Every line is accounted for: an event, or a :class:`Skipped` with a reason. Informational lines
(banners, configuration, lmgrd chatter) are skipped as such; a line that does not have the
``time (daemon)`` shape at all is ``unparseable`` and goes to the dead-letter topic.
Identity: ``event_id = "<server>:<file name>:<line>"`` and ``seq`` is the line number, so reading a
file twice produces the same events.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from lictel.errors import ConfigError, InputError
from lictel.events import DENIED, DEQUEUED, HEARTBEAT, IN, OUT, QUEUED, RESTART, Event
from lictel.timeutil import from_us, to_us

if TYPE_CHECKING:
    from producers.base import EventProducer

_LINE = re.compile(r"\s*(\d{1,2}):(\d\d):(\d\d) \(([^)\s]+)\) ?(.*)")
# lmgrd -datestamp: "2026-03-02T08:15:03+01:00 (CITRIX) OUT: ..." (ISO 8601; the offset as Z, +hh:mm,
# +hhmm or +hh; without one the time is the server's local time, --tz).
_ISO_LINE = re.compile(r"\s*(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,]\d+)?"
                       r"(Z|[+-]\d\d(?::?\d\d)?)? \(([^)\s]+)\) ?(.*)")
_USAGE = re.compile(r'^(OUT|IN|DENIED|UNSUPPORTED|QUEUED|DEQUEUED): "([^"]*)" ?(.*)$')
_LICENSES = re.compile(r"\s*\((\d+) licenses?\)")
_FLAG = re.compile(r"\s*\((INACTIVE|SHUTDOWN)\)\s*$")
_PROJECT = re.compile(r"\s*\[([^\]]*)\]")
_VERBOSE = re.compile(r"\s*\^\^\^(.*?)\^\^\^")
_FORKED = re.compile(r"^(.+)_\d+$")
_REASON = re.compile(r"\s{2,}\((.*)\)\s*$")
_TIMESTAMP = re.compile(r"^TIMESTAMP (\d{1,2})/(\d{1,2})/(\d{4})")
_STARTED_ON = re.compile(r"(?:FLEXnet|FlexNet|FLEXlm) Licensing .*started on .*\((\d{1,2})/(\d{1,2})/(\d{4})\)\s*$")
_SYSTEM_DATE = re.compile(r"^Server's System Date and Time: \w{3} (\w{3}) (\d{1,2}) (\d{4}) (\d{1,2}):(\d\d):(\d\d)")
_VENDOR_START = re.compile(r"^Server started on ")
_EXITING = re.compile(r"^EXITING DUE TO SIGNAL")
_EXITED = re.compile(r"^(\S+) exited with status")
_RESTARTED = re.compile(r"^REStarted (\S+)")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_ACTION = {"OUT": OUT, "IN": IN, "DENIED": DENIED, "UNSUPPORTED": DENIED, "QUEUED": QUEUED, "DEQUEUED": DEQUEUED}
_DATE_STARTS = frozenset("TFS")  # TIMESTAMP, FLEXnet/FlexNet/FLEXlm Licensing, Server's System Date
_USAGE_STARTS = frozenset("OIDUQ")
_RESTART_STARTS = frozenset("SE")  # Server started, EXITING
_MIDNIGHT_STEP = 65 * 60  # a step back larger than this (seconds) means the next day
LMGRD = "lmgrd"


@dataclass(frozen=True)
class Skipped:
    """A line that made no event, and why. ``dead`` lines go to the dead-letter topic."""

    line: int
    reason: str
    raw: str
    dead: bool = False


@dataclass
class ParseStats:
    """What one file gave: lines, events by kind, skipped lines by reason, warnings."""

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    lineno: int
    secs: int
    daemon: str
    body: str
    raw: str


class FlexnetParser:
    """Parses one server's log files, in order (oldest rotated file first)."""

    def __init__(self, *, org: str, server: str, tz: str = "UTC", date: dt.date | None = None) -> None:
        try:
            self.tz = ZoneInfo(tz)
        except Exception:
            raise ConfigError(f"--tz {tz!r} is not a time zone name (like Europe/Berlin or UTC)") from None
        self.org = org
        self.server = server
        self.date = date
        self.fold = 0
        self.prev_secs: int | None = None
        self.daemons: set[str] = set()
        self.stats = ParseStats()
        self._pending: list[_Pending] = []
        self._source = ""
        self._day_offsets: dict[dt.date, tuple[int, int, bool]] = {}

    def parse(self, lines: Iterable[str], name: str, first_line: int = 1) -> Iterator[Event | Skipped]:
        """Events and skipped lines of one file (``name`` is its base name, for event ids).

        ``first_line`` numbers the first of ``lines`` when a file is read in pieces (follow mode).
        """
        self._source = f"{self.server}:{name}"
        for lineno, raw in enumerate(lines, first_line):
            self.stats.lines += 1
            text = raw.lstrip("\ufeff").rstrip("\r\n")
            if not text.strip():
                yield self._skip(lineno, "blank", text)
                continue
            m = _LINE.match(text)
            if m is None:
                iso = _ISO_LINE.match(text)
                if iso is None:
                    yield self._skip(lineno, "unparseable (no 'H:MM:SS (daemon)' or ISO-8601 date-time prefix)",
                                     text, dead=True)
                else:
                    yield from self._iso_line(lineno, iso, text)
                continue
            hh, mm, ss, daemon, body = m.groups()
            if "_" in daemon:
                daemon = _vendor_of(daemon)
            h, mi, se = int(hh), int(mm), int(ss)
            if h > 23 or mi > 59 or se > 59:
                yield self._skip(lineno, "unparseable (impossible time of day)", text, dead=True)
                continue
            secs = h * 3600 + mi * 60 + se
            body = body.rstrip()
            if body[:1] in _DATE_STARTS and self._sets_date(lineno, secs, body):
                yield from self._flush_pending()
                yield self._skip(lineno, "date line", text)
                continue
            if self.date is None:
                self._pending.append(_Pending(lineno, secs, daemon, body, text))
                continue
            self._advance(secs)
            out = self._line(lineno, secs, daemon, body, text, self.date, self.fold)
            if type(out) is list:
                yield from out
            else:
                yield out  # type: ignore[misc]

    def _iso_line(self, lineno: int, m: re.Match[str], text: str) -> Iterator[Event | Skipped]:
        """A line of a log written with ``lmgrd -datestamp``: it carries its own date and offset."""
        year, month, day, h, mi, se, offset, daemon, body = m.groups()
        try:
            tz: dt.tzinfo = self.tz if offset is None else _offset(offset)
            local = dt.datetime(int(year), int(month), int(day), int(h), int(mi), int(se), tzinfo=tz)
        except ValueError:
            yield self._skip(lineno, "unparseable (impossible date or time)", text, dead=True)
            return
        secs = local.hour * 3600 + local.minute * 60 + local.second
        self._set_date(lineno, secs, local.date())
        yield from self._flush_pending()
        body = body.rstrip()
        if body[:1] in _DATE_STARTS and _date_in(body) is not None:
            yield self._skip(lineno, "date line", text)
            return
        out = self._line(lineno, secs, _vendor_of(daemon), body, text, local.date(), 0, ts=to_us(local))
        if isinstance(out, list):
            yield from out
        else:
            yield out

    @property
    def waiting(self) -> bool:
        """Lines are held back until a date is known."""
        return bool(self._pending)

    def to_state(self) -> dict[str, object]:
        """What a follower must keep to resume mid-file (dates, midnight tracking, daemons)."""
        return {"date": self.date.isoformat() if self.date else None, "prev": self.prev_secs, "fold": self.fold,
                "daemons": sorted(self.daemons)}

    def restore(self, state: dict[str, object]) -> None:
        date = state.get("date")
        self.date = dt.date.fromisoformat(str(date)) if date else None
        prev = state.get("prev")
        self.prev_secs = int(prev) if isinstance(prev, int) else None
        fold = state.get("fold")
        self.fold = int(fold) if isinstance(fold, int) else 0
        daemons = state.get("daemons")
        self.daemons = {str(d) for d in daemons} if isinstance(daemons, list) else set()

    def finish(self) -> Iterator[Event | Skipped]:
        """End of input: lines still waiting for a date are reported, never guessed."""
        for p in self._pending:
            yield self._skip(p.lineno, "no date known (no TIMESTAMP or start line in the log; give --date)", p.raw,
                             dead=True)
        self._pending = []

    # ------------------------------------------------------------------ dates

    def _sets_date(self, lineno: int, secs: int, body: str) -> bool:
        new = _date_in(body)
        if new is None:
            return False
        self._set_date(lineno, secs, new)
        return True

    def _set_date(self, lineno: int, secs: int, new: dt.date) -> None:
        """The date is now ``new`` (at ``secs`` past its midnight); a step back is reported."""
        if self.date is not None and new < self.date:
            self.stats.warnings.append(
                f"line {lineno}: the date goes back from {self.date} to {new}: a log segment out of order "
                f"(logs pasted together newest-first?)")
        if self.date != new:
            self.fold = 0
        self.date = new
        self.prev_secs = secs

    def _advance(self, secs: int) -> None:
        assert self.date is not None
        prev = self.prev_secs
        self.prev_secs = secs
        if prev is None or secs >= prev:
            return
        if prev - secs > _MIDNIGHT_STEP:
            self.date += dt.timedelta(days=1)
            self.fold = 0
            return
        # A small step back: the repeated hour at the end of daylight saving time, or jitter
        # between daemons writing to one file.
        local = dt.datetime.combine(self.date, dt.time(secs // 3600, secs // 60 % 60, secs % 60), tzinfo=self.tz)
        if local.replace(fold=1).utcoffset() != local.replace(fold=0).utcoffset():
            self.fold = 1

    def _flush_pending(self) -> Iterator[Event | Skipped]:
        """Date the lines that came before the first date, counting days backwards."""
        if not self._pending:
            return
        assert self.date is not None
        dates: list[dt.date] = []
        day = self.date
        nxt = self.prev_secs
        for p in reversed(self._pending):
            if nxt is not None and p.secs - nxt > _MIDNIGHT_STEP:
                day -= dt.timedelta(days=1)
            dates.append(day)
            nxt = p.secs
        pending, self._pending = self._pending, []
        for p, day in zip(pending, reversed(dates), strict=True):
            out = self._line(p.lineno, p.secs, p.daemon, p.body, p.raw, day, 0)
            if isinstance(out, list):
                yield from out
            else:
                yield out

    # ------------------------------------------------------------------ events

    def _ts(self, day: dt.date, secs: int, fold: int) -> int:
        """UTC microseconds of a local time. Days without a DST change take the fast path."""
        cached = self._day_offsets.get(day)
        if cached is None:
            start = dt.datetime.combine(day, dt.time(0), tzinfo=self.tz)
            end = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=self.tz)
            base = to_us(dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC))
            offset = start.utcoffset()
            same = offset == end.utcoffset() and offset is not None
            cached = self._day_offsets[day] = (base, int(offset.total_seconds()) if same and offset else 0, same)
        base, offset_s, simple = cached
        if simple:
            return base + (secs - offset_s) * 1_000_000
        local = dt.datetime.combine(day, dt.time(secs // 3600, secs // 60 % 60, secs % 60, fold=fold),
                                    tzinfo=self.tz)
        return to_us(local)

    def _line(self, lineno: int, secs: int, daemon: str, body: str, raw: str, day: dt.date,
              fold: int, ts: int | None = None) -> Event | Skipped | list[Event]:
        if ts is None:
            ts = self._ts(day, secs, fold)
        if body[:1] in _USAGE_STARTS and daemon != LMGRD:
            m = _USAGE.match(body)
            if m is not None:
                return self._usage(lineno, ts, daemon, m.group(1), m.group(2), m.group(3), raw)
        if daemon == LMGRD or body[:1] in _RESTART_STARTS:
            restarted = self._restarted_daemons(daemon, body)
            if restarted:
                return [self._event(lineno, ts, vendor, "", RESTART, "", "", None, 1, body[:200], sub=i)
                        for i, vendor in enumerate(sorted(restarted))]
        if daemon != LMGRD:
            self.daemons.add(daemon)
        return self._skip(lineno, "informational", raw)

    def _restarted_daemons(self, daemon: str, body: str) -> set[str]:
        if daemon != LMGRD and (_VENDOR_START.match(body) or _EXITING.match(body)):
            self.daemons.add(daemon)
            return {daemon}
        if daemon == LMGRD:
            m = _EXITED.match(body) or _RESTARTED.match(body)
            if m:
                self.daemons.add(m.group(1))
                return {m.group(1)}
            if _EXITING.match(body):
                return set(self.daemons)
        return set()

    def _usage(self, lineno: int, ts: int, daemon: str, kind: str, feature: str, rest: str,
               raw: str) -> Event | Skipped:
        self.daemons.add(daemon)
        action = _ACTION[kind]
        reason = None
        count = 1
        if action in (OUT, IN):
            rest = _FLAG.sub("", rest)
            lic = _LICENSES.search(rest)
            if lic:
                count = int(lic.group(1))
                rest = rest[:lic.start()] + rest[lic.end():]
        else:
            r = _REASON.search(rest)
            if r:
                reason = r.group(1)
                rest = rest[:r.start()]
        handle = None
        verbose = _VERBOSE.search(rest) if "^^^" in rest else None
        if verbose:
            # ^^^ ver user ip pid handle in_use out_of project flex_version flex_revision date time dup ^^^
            fields = verbose.group(1).split()
            rest = rest[:verbose.start()] + rest[verbose.end():]
            if len(fields) >= 5:
                handle = fields[4]
            if "@" not in rest and len(fields) >= 2:
                rest = f"{fields[1]}{rest.strip()}"  # the "@host" form names the user in the block
        proj = _PROJECT.search(rest)
        if proj:
            handle = proj.group(1) if handle is None else f"{proj.group(1)}|{handle}"
            rest = rest[:proj.start()] + rest[proj.end():]
        who = rest.strip()
        if kind == "UNSUPPORTED" and " " in who:
            who = who.rsplit(" ", 1)[1]  # the last user@host token; the text before it is noise
        if "@" not in who:
            return self._skip(lineno, f"{kind} line without user@host", raw, dead=True)
        user, host = who.rsplit("@", 1)
        if count < 1 or not feature:
            return self._skip(lineno, f"{kind} line without a feature or with a bad license count", raw, dead=True)
        return self._event(lineno, ts, daemon, feature, action, user.strip(), host.strip(), handle, count, reason)

    def _event(self, lineno: int, ts: int, vendor: str, feature: str, action: str, user: str, host: str,
               handle: str | None, count: int, reason: str | None, sub: int = 0) -> Event:
        self.stats.events[action] += 1
        suffix = f".{sub}" if sub else ""
        return Event(f"{self._source}:{lineno}{suffix}", ts, self.org, self.server, vendor, feature, action, user,
                     host, handle, count, reason, self._source, lineno * 16 + sub)

    def _skip(self, lineno: int, reason: str, raw: str, dead: bool = False) -> Skipped:
        self.stats.skipped[reason] += 1
        return Skipped(lineno, reason, raw[:4096], dead)


def _date_in(body: str) -> dt.date | None:
    """The date a TIMESTAMP, licensing start-up or system-date line names, if the body is one."""
    m = _TIMESTAMP.match(body)
    if m:
        month, day, year = (int(x) for x in m.groups())
    else:
        m2 = _STARTED_ON.search(body)
        if m2:
            month, day, year = (int(x) for x in m2.groups())
        else:
            m3 = _SYSTEM_DATE.match(body)
            if not m3 or m3.group(1) not in _MONTHS:
                return None
            month, day, year = _MONTHS[m3.group(1)], int(m3.group(2)), int(m3.group(3))
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _vendor_of(daemon: str) -> str:
    """``CITRIX_1`` (a forked copy of the CITRIX daemon) → ``CITRIX``."""
    if "_" in daemon:
        forked = _FORKED.match(daemon)
        if forked:
            return forked.group(1)
    return daemon


def _offset(text: str) -> dt.tzinfo:
    if text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def render(events: Iterable[Event], tz: str = "UTC") -> Iterator[str]:
    """Events of one server as compact FlexNet debug-log lines, in the server's local time.

    A ``TIMESTAMP`` line is written whenever the local date changes, as lmgrd does. Used to turn
    simulated estates into logs and to check the parser by a round trip.
    """
    zone = ZoneInfo(tz)
    last_date: dt.date | None = None
    for e in events:
        if e.action == HEARTBEAT:
            continue
        local = from_us(e.ts).astimezone(zone)
        clock = f"{local.hour:2d}:{local.minute:02d}:{local.second:02d}"
        if local.date() != last_date:
            last_date = local.date()
            yield f"{clock} (lmgrd) TIMESTAMP {last_date.month}/{last_date.day}/{last_date.year}"
        if e.action == RESTART:
            yield f"{clock} ({e.vendor}) Server started on {e.server} for:"
            continue
        kind = e.action
        who = f"{e.user}@{e.host}"
        if e.handle:
            who += f" [{e.handle}]"
        if kind in (OUT, IN):
            lic = f" ({e.count} licenses)" if e.count != 1 else ""
            yield f"{clock} ({e.vendor}) {kind}: \"{e.feature}\" {who}{lic}  "
        else:
            reason = f"  ({e.reason})" if e.reason else "  "
            yield f"{clock} ({e.vendor}) {kind}: \"{e.feature}\" {who}{reason}"


_ROTATED = re.compile(r"^(.*?)(?:\.(\d+))?$")


def order_rotated(paths: Iterable[Path]) -> list[Path]:
    """Rotated logs oldest first: ``CITRIX.log.2``, ``CITRIX.log.1``, ``CITRIX.log``; others as given."""
    def key(item: tuple[int, Path]) -> tuple[str, int, int]:
        index, path = item
        m = _ROTATED.match(path.name)
        base, number = (m.group(1), int(m.group(2))) if m and m.group(2) else (path.name, 0)
        return (str(path.parent / base), -number, index)

    return [p for _, p in sorted(enumerate(paths), key=key)]


async def produce_flexnet(producer: EventProducer, paths: list[Path], parser: FlexnetParser,
                          on_progress: Callable[[int], None] | None = None) -> None:
    """Parse ``paths`` (rotated files oldest first) and send their events; dead-letter bad lines.

    Files are read whole before sending: if a file's dates go back (segments pasted out of order),
    its events are sent in time order instead of file order, so they are not late.
    """
    last = paths[-1] if paths else Path("-")
    for path in order_rotated(paths):
        last = path
        warned = len(parser.stats.warnings)
        with open(path, "rb") as fh:
            def lines() -> Iterator[str]:
                for raw in fh:
                    if on_progress is not None:
                        on_progress(len(raw))
                    yield raw.decode("utf-8", "replace")

            items = list(parser.parse(lines(), path.name))
        if len(parser.stats.warnings) > warned:
            events = sorted((i for i in items if isinstance(i, Event)), key=lambda e: (e.ts, e.seq))
            parser.stats.warnings.append(
                f"{path.name}: {len(parser.stats.warnings) - warned} segment(s) out of order; "
                f"its {len(events):,} events were sent in time order")
            items = [*events, *(i for i in items if isinstance(i, Skipped))]
        for item in items:
            await _emit(producer, item, path)
    for item in parser.finish():
        await _emit(producer, item, last)


async def _emit(producer: EventProducer, item: Event | Skipped, path: Path) -> None:
    if isinstance(item, Event):
        await producer.send(item)
    elif item.dead:
        await producer.dead_letter(InputError(item.reason, source=str(path), line=item.line, raw=item.raw))
