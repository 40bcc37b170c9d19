"""FlexNet (FLEXlm) debug logs → LicenseEvents.

The parser is pure: lines in, :class:`Event`s and :class:`Skipped` records out, so it can be
tested on text and measured without Kafka. :func:`produce_flexnet` feeds its output to a producer.

Line kinds understood (compact form, ``H:MM:SS (DAEMON) message``; ``DAEMON_N`` is a forked copy
of ``DAEMON`` and counts as it):

- ``OUT: "FEATURE" user@host [project] (N licenses)`` and ``IN: ...`` with an optional trailing
  ``(INACTIVE)`` or ``(SHUTDOWN)``; ``DENIED``, ``UNSUPPORTED`` (a request for a feature the server
  does not serve: its own action, not a denial), ``QUEUED``, ``DEQUEUED`` with the reason in the
  trailing parentheses, normalised to the server's error code (``(-4,342:10054 "")`` and
  ``(-4,342:104 "Connection reset by peer")`` are both ``(-4,342)``: the socket detail says how the
  client went away, not why it was refused). User names may contain spaces: the
  user is everything up to the last ``@`` of the user@host part. A ``[project]`` tag becomes the
  checkout's handle, so check-ins match the checkout they close. The verbose form's
  ``^^^ ver user ip pid handle ... ^^^`` block is read too: its client handle becomes the handle.
- Dates: ``TIMESTAMP m/d/yyyy``, lmgrd's ``started on HOST (...) (m/d/yyyy)`` and ``Server's System
  Date and Time: Www Mmm DD YYYY HH:MM:SS`` lines set the date; a time more than 65 minutes earlier
  than the previous line's means midnight passed. Lines before the first date wait for it and are
  dated backwards from it; ``date`` gives it when a log has none.
- Local time: ``tz`` (an IANA zone) converts times to UTC. Without it, the zone lmgrd's
  ``Server's System Date and Time: ... ZONE`` line names is taken (Windows names mapped to IANA by
  CLDR's table, :mod:`lictel.zones`); a log that names none, or a name that maps to no zone, is
  refused (:class:`ConfigError`) before any of it is sent. In the hour that repeats when daylight
  saving time ends, a step back of up to an hour is the second pass of that hour.
- Restarts: a vendor daemon's ``Server started on`` (unless a reread announced it),
  ``EXITING DUE TO SIGNAL``, lmgrd's ``DAEMON exited with status`` / ``REStarted DAEMON`` and
  lmgrd's own start banner release everything the daemon held (a RESTART event); lmgrd's own
  exit releases every daemon it has seen. A crashed server therefore leaves no phantom checkouts.
- Rereads: after ``Rereading license file...`` (lmreread, by the daemon or by lmgrd a moment
  before) or ``FEATURE expired -- rereading to update``, the daemon's ``Server started on`` line
  is a REREAD event until ``...Finished rereading``: recorded and counted, checkouts survive it.
- A date that goes backwards (logs pasted together newest-first) is reported as a segment out of
  order, with its line number; :func:`produce_flexnet` then sends that file's events in time order.
- A block of at least :data:`REPEAT_MIN_LINES` event and date lines (two or more times of day) whose
  every line repeats the text of an earlier block's lines is a copy pasted into the log, when the
  parser dated both alike, or when it is :data:`REPEAT_MIN_LINES_UNDATED` lines or more (a copy
  without its own date line is dated by what precedes it): it is skipped and reported ("lines A-B
  repeat lines C-D"), and the dating goes on as if it were not there. The same clock text on
  another day is no copy, and neither is one line, or a burst of identical lines in one second.

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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from lictel.errors import ConfigError, InputError
from lictel.events import DENIED, DEQUEUED, HEARTBEAT, IN, OUT, QUEUED, REREAD, RESTART, UNSUPPORTED, Event
from lictel.timeutil import from_us, to_us
from lictel.zones import iana_zone

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
# A reread: lmreread ("Rereading license file... Requested from ..."), or the daily one that a
# vendor daemon starts by itself ("base expired -- rereading to update").
_REREADING = re.compile(r"^(?:Rereading license file|\S+ expired -- rereading)")
_REREAD_DONE = re.compile(r"^\.\.\.Finished rereading")
_REREAD_WINDOW = 300  # seconds: a vendor start this soon after lmgrd announced a reread is one
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_ACTION = {"OUT": OUT, "IN": IN, "DENIED": DENIED, "UNSUPPORTED": UNSUPPORTED, "QUEUED": QUEUED,
           "DEQUEUED": DEQUEUED}
# The socket detail a server appends to an error code: "(-4,342:10054 "")" is "(-4,342)".
_SOCKET_DETAIL = re.compile(r'\((-?\d+(?:,-?\d+)?):[^()]*\)\s*$')
_DATE_STARTS = frozenset("TFS")  # TIMESTAMP, FLEXnet/FlexNet/FLEXlm Licensing, Server's System Date
_USAGE_STARTS = frozenset("OIDUQ")
# A usage keyword followed by ':' or by something no message word has (a replacement character, a
# control character): a usage line whose text is damaged.
_DAMAGED_USAGE = re.compile(r"^(?:OUT|IN|DENIED|UNSUPPORTED|QUEUED|DEQUEUED)(?::|[^\w\s(])")
_RESTART_STARTS = frozenset("SE")  # Server started, EXITING
_MIDNIGHT_STEP = 65 * 60  # a step back larger than this (seconds) means the next day
LMGRD = "lmgrd"
#: A block of at least this many event lines, with at least two different times, that repeats an
#: earlier block (same text, dated alike) is a copy pasted into the log: its lines count once.
REPEAT_MIN_LINES = 10
#: A verbatim copy this long (with five or more times of day) counts once whatever dates the parser
#: gives it: a copy pasted without its own date line is dated by the lines before it.
REPEAT_MIN_LINES_UNDATED = 50
#: How many dated lines the repeat finder remembers (about 100 bytes each).
REPEAT_WINDOW = 2_000_000


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
    repeated_lines: int = 0
    repeats: list[str] = field(default_factory=list)  # "lines A-B repeat lines C-D", one a copy
    out_of_order: int = 0  # segments whose date goes back
    damaged_times: int = 0  # lines whose time went back without a midnight (dead letters)


class _Run:
    """A candidate repeated block: lines held back while they equal an earlier block line by line."""

    __slots__ = ("before", "cands", "clocks", "dated", "items", "length", "lines", "start")

    def __init__(self, cands: list[int], start: int, lineno: int, clock: str,
                 items: list[Event | Skipped], before: tuple[dt.date | None, int | None, int]) -> None:
        self.before = before  # the dating to go on from if it is a copy: after the line before it
        self.cands = cands  # where the earlier copy may begin (positions of dated lines)
        self.start = start  # position of the block's first line
        self.length = 1
        self.lines = [lineno]
        self.clocks = {clock}
        self.items = items
        self.dated = False  # holds a date line: its text names its date, so the copy is dated alike


class _Repeats:
    """Remembers every line that makes events or sets the date (a hash of its text, the date and
    time the parser gave it) to find blocks that repeat earlier ones.

    Positions count those lines across the files of one parser. Only the last
    :data:`REPEAT_WINDOW` lines are remembered, so memory stays bounded on a followed log.
    """

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.dates: list[dt.date] = []  # the date the parser gave each position
        self.secs: list[int | None] = []  # and its time of day
        self.where: list[int] = []  # line number of each position
        self.names: list[tuple[int, str]] = []  # (first position, file name)
        self.first: dict[int, int] = {}
        self.more: dict[int, list[int]] = {}  # the latest positions of keys seen more than once
        self.base = 0
        self.run: _Run | None = None

    def file(self, name: str) -> None:
        if not self.names or self.names[-1][1] != name:
            self.names.append((self.base + len(self.keys), name))

    def add(self, key: int, lineno: int, date: dt.date, secs: int | None) -> int | None:
        """Remember one dated line; return the first position of the same key, if seen before."""
        pos = self.base + len(self.keys)
        self.keys.append(key)
        self.dates.append(date)
        self.secs.append(secs)
        self.where.append(lineno)
        earlier = self.first.get(key)
        if earlier is None:
            self.first[key] = pos
            if len(self.keys) > REPEAT_WINDOW and self.run is None:
                self._trim()
            return None
        later = self.more.get(key)
        if later is None:
            self.more[key] = [pos]
        else:  # the latest few: a copy most often repeats what came just before it
            later.append(pos)
            if len(later) > 3:
                del later[0]
        # A copy of at least REPEAT_MIN_LINES lines lies at least that far back.
        return earlier if pos - earlier >= REPEAT_MIN_LINES else None

    def forget_last(self) -> None:
        """Take back the last line remembered (it is read again)."""
        pos = self.base + len(self.keys) - 1
        key = self.keys.pop()
        self.dates.pop()
        self.secs.pop()
        self.where.pop()
        if self.first.get(key) == pos:
            del self.first[key]
        later = self.more.get(key)
        if later and later[-1] == pos:
            later.pop()

    def begin(self, key: int, earlier: int, lineno: int, clock: str, items: list[Event | Skipped],
              dating: tuple[dt.date | None, int | None, int], date_line: bool) -> None:
        """A candidate block starts at the last line remembered. If it is a copy, the dating goes on
        from the remembered line before it (``dating``, the state before this line, if there is
        none): every date line is remembered, so only a midnight, which the next line finds again,
        can lie between."""
        pos = self.base + len(self.keys) - 1
        # Where the original may begin: the first and the latest places of this line, and every line
        # of a burst of identical lines before each (a copy can start anywhere inside a burst).
        cands: set[int] = set()
        for c in (earlier, *self.more.get(key, ())):
            while c < pos and c >= self.base and c not in cands and self.keys[c - self.base] == key:
                cands.add(c)
                c -= 1
        prev = pos - 1 - self.base
        if prev >= 0:
            dating = (self.dates[prev], self.secs[prev], 0)
        self.run = _Run(sorted(cands), pos, lineno, clock, items, dating)
        self.run.dated = date_line

    def extend(self, key: int, lineno: int, clock: str, items: list[Event | Skipped], date_line: bool) -> bool:
        """Does this line continue the candidate block? (Then it is held with it.)"""
        run = self.run
        assert run is not None
        keys, base, n = self.keys, self.base, run.length
        alive = [c for c in run.cands if c + n < run.start and c + n >= base and keys[c + n - base] == key]
        if not alive:
            return False
        run.cands = alive
        run.length += 1
        run.lines.append(lineno)
        run.clocks.add(clock)
        run.items.extend(items)
        run.dated |= date_line
        return True

    def is_repeat(self, run: _Run) -> bool:
        """A copy: long enough, more than one time of day, and dated like the original: it repeats a
        date line (whose text names the date), or the parser dated both alike, or it is so long that
        it is no chance (a pasted copy is often dated a day off by the step back at its start)."""
        if run.length < REPEAT_MIN_LINES or len(run.clocks) < 2:
            return False
        if run.dated or (run.length >= REPEAT_MIN_LINES_UNDATED and len(run.clocks) >= 5):
            return True
        first, start = run.cands[0] - self.base, run.start - self.base
        return first >= 0 and self.dates[first:first + run.length] == self.dates[start:start + run.length]

    def describe(self, run: _Run) -> str:
        first = run.cands[0]
        a, b = (self.where[p - self.base] for p in (first, first + run.length - 1))
        here = self._name(run.start)
        there = self._name(first)
        of = f" of {there}" if there != here else ""
        return f"{here}: lines {run.lines[0]}-{run.lines[-1]} repeat lines {a}-{b}{of}"

    def _name(self, pos: int) -> str:
        name = ""
        for start, n in self.names:
            if start > pos:
                break
            name = n
        return name

    def _trim(self) -> None:
        cut = len(self.keys) // 2
        self.base += cut
        del self.keys[:cut]
        del self.dates[:cut]
        del self.secs[:cut]
        del self.where[:cut]
        firsts = {k: p for k, p in self.first.items() if p >= self.base}
        self.first = firsts
        self.more = {k: kept for k, ps in self.more.items() if (kept := [p for p in ps if p >= self.base])}


@dataclass
class _Pending:
    lineno: int
    secs: int
    daemon: str
    body: str
    raw: str


class FlexnetParser:
    """Parses one server's log files, in order (oldest rotated file first)."""

    def __init__(self, *, org: str, server: str, tz: str | None = None, date: dt.date | None = None) -> None:
        self.tz: ZoneInfo | None = None
        #: Where the zone came from, for the summary: "--tz", or what the log named.
        self.tz_origin = ""
        self._zone_named = ""  # a zone name the log gave that maps to no IANA zone
        if tz is not None:
            self.tz = _zone(tz)
            self.tz_origin = "--tz"
        self.org = org
        self.server = server
        self.date = date
        self.first_date = date  # --date, for a parser that must read the same file again
        self.fold = 0
        self.prev_secs: int | None = None
        self.daemons: set[str] = set()
        self.stats = ParseStats()
        self._pending: list[_Pending] = []
        # A line whose time jumped more than _MIDNIGHT_STEP back (a midnight?) or forward (a quiet
        # stretch?), or is one damaged time: it waits for the next timed line to tell (_resolve_held);
        # ``_as_read`` then reads it as it stands.
        self._held: _Pending | None = None
        self._as_read = False
        self._source = ""
        self._name = ""
        self._day_offsets: dict[dt.date, tuple[int, int, bool]] = {}
        self._repeats = _Repeats()
        self._rereading: dict[str, int] = {}  # daemon (or lmgrd for all) -> when its reread began
        # Dates that went back: (lines remembered by then, warnings before its warning).
        self._backs: list[tuple[int, int]] = []
        self._date_lineno = 0  # the last date line

    def parse(self, lines: Iterable[str], name: str, first_line: int = 1) -> Iterator[Event | Skipped]:
        """Events and skipped lines of one file (``name`` is its base name, for event ids).

        ``first_line`` numbers the first of ``lines`` when a file is read in pieces (follow mode).
        """
        self._source = f"{self.server}:{name}"
        self._name = name
        rep = self._repeats
        rep.file(name)
        stats = self.stats
        lineno = first_line - 1
        try:
            for lineno, raw in enumerate(lines, first_line):
                text = (raw[1:] if raw[:1] == "\ufeff" else raw).rstrip("\r\n")
                while True:  # a second pass only when a repeated block ended on this line (see _repeat_step)
                    date0, prev0, fold0 = self.date, self.prev_secs, self.fold  # the dating before this line
                    out: Event | Skipped | list[Event | Skipped] | None
                    m = _LINE.match(text)
                    if m is None:
                        out = self._unmatched(lineno, text)
                    else:
                        hh, mm, ss, daemon, body = m.groups()
                        h, mi, se = int(hh), int(mm), int(ss)
                        if h > 23 or mi > 59 or se > 59:
                            out = self._skip(lineno, "unparseable (impossible time of day)", text, dead=True)
                        else:
                            if "_" in daemon:
                                daemon = _vendor_of(daemon)
                            secs = h * 3600 + mi * 60 + se
                            body = body.rstrip()
                            if self._held is not None:
                                yield from self._resolve_held(secs, name)
                            if body[:1] in _DATE_STARTS and self._sets_date(lineno, secs, body):
                                out = self._date_line(lineno, secs, daemon, body, text)
                            elif self.date is None:
                                self._pending.append(_Pending(lineno, secs, daemon, body, text))
                                break
                            else:
                                prev = self.prev_secs
                                if prev is None or 0 <= secs - prev <= _MIDNIGHT_STEP:
                                    self.prev_secs = secs  # a step forward: the common case, inline
                                elif not self._as_read and abs(secs - prev) > _MIDNIGHT_STEP:
                                    self._held = _Pending(lineno, secs, daemon, body, text)
                                    break  # a midnight, a quiet stretch, or a damaged time: the next line tells
                                else:
                                    self._advance(secs)
                                out = self._line(lineno, secs, daemon, body, text, self.date, self.fold)  # type: ignore[assignment]
                    kind = type(out)
                    if kind is Event or kind is list:
                        # A line that makes events or sets the date (the lines that decide what is counted
                        # when): the same text as an earlier one may start a copy.
                        key = hash(text)
                        earlier = rep.add(key, lineno, self.date, self.prev_secs)  # type: ignore[arg-type]
                        if rep.run is not None or earlier is not None:
                            items: list[Event | Skipped] = out if kind is list else [out]  # type: ignore[assignment,list-item]
                            if (yield from self._repeat_step(key, earlier, lineno, text, items, (date0, prev0, fold0))):
                                continue
                            break
                    if kind is list:
                        yield from out  # type: ignore[misc]
                    else:
                        yield out  # type: ignore[misc]
                    break
        finally:
            stats.lines += lineno - first_line + 1  # counted once, not per line (the hot loop)

    def _unmatched(self, lineno: int, text: str) -> Skipped | list[Event | Skipped]:
        """A line without the ``H:MM:SS (daemon)`` prefix: blank, ``-datestamp``, or unparseable."""
        if not text.strip():
            return self._skip(lineno, "blank", text)
        iso = _ISO_LINE.match(text)
        if iso is None:
            return self._skip(lineno, "unparseable (no 'H:MM:SS (daemon)' or ISO-8601 date-time prefix)",
                              text, dead=True)
        return list(self._iso_line(lineno, iso, text))

    def _date_line(self, lineno: int, secs: int, daemon: str, body: str, text: str) -> list[Event | Skipped]:
        """A line that set the date: lines waiting for one are dated; lmgrd starting again releases
        every vendor daemon it ran before, with its checkouts."""
        self._date_lineno = lineno
        items: list[Event | Skipped] = list(self._flush_pending())
        if daemon == LMGRD and _STARTED_ON.search(body) and self.daemons:
            assert self.date is not None
            ts = self._ts(self.date, secs, self.fold)
            self._rereading.clear()
            items += [self._event(lineno, ts, vendor, "", RESTART, "", "", None, 1, body[:200], sub=i)
                      for i, vendor in enumerate(sorted(self.daemons))]
        else:
            items.append(self._skip(lineno, "date line", text))
        return items

    def _repeat_step(self, key: int, earlier: int | None, lineno: int, text: str, items: list[Event | Skipped],
                     before: tuple[dt.date | None, int | None, int]) -> Generator[Event | Skipped, None, bool]:
        """The slow path of :meth:`parse`: an event line that may continue or start a repeated block.

        Returns True when a copy ended at this line: the line was dated as if it continued the copy,
        so it is taken back and :meth:`parse` reads it again from where the log resumes.
        """
        rep = self._repeats
        clock = text.split("(", 1)[0]
        date_line = self._date_lineno == lineno
        if rep.run is not None:
            if rep.extend(key, lineno, clock, items, date_line):
                return False
            if (yield from self._end_repeat()):
                self._uncount(items)
                rep.forget_last()
                return True
        if earlier is None:
            yield from items
            return False
        rep.begin(key, earlier, lineno, clock, items, before, date_line)
        return False

    def _end_repeat(self) -> Generator[Event | Skipped, None, bool]:
        """Decide a candidate block: skip it (a verbatim repeat; returns True) or release its lines."""
        rep = self._repeats
        run = rep.run
        if run is None:
            return False
        rep.run = None
        if not rep.is_repeat(run):
            yield from run.items
            return False
        # As if the block were not there: the dates of what follows go on from before it, and dates
        # that went back since (the copy's own date lines) are no segments out of order.
        self.date, self.prev_secs, self.fold = run.before
        undo = [b for b in self._backs if b[0] >= run.start]
        if undo:
            del self.stats.warnings[undo[0][1]:]
            self.stats.out_of_order -= len(undo)
            del self._backs[-len(undo):]
        self._uncount(run.items)
        self.stats.repeated_lines += run.length
        self.stats.repeats.append(rep.describe(run))
        self.stats.warnings.append(f"{self.stats.repeats[-1]}: skipped (a verbatim repeat of the log counts once)")
        reason = "repeats an earlier block of the log (counted once)"
        for n in run.lines:
            yield self._skip(n, reason, "")
        return True

    def _uncount(self, items: list[Event | Skipped]) -> None:
        for item in items:
            if isinstance(item, Event):
                self.stats.events[item.action] -= 1
            else:
                self.stats.skipped[item.reason] -= 1
        self.stats.events = +self.stats.events
        self.stats.skipped = +self.stats.skipped
    def _iso_line(self, lineno: int, m: re.Match[str], text: str) -> Iterator[Event | Skipped]:
        """A line of a log written with ``lmgrd -datestamp``: it carries its own date and offset."""
        year, month, day, h, mi, se, offset, daemon, body = m.groups()
        if offset is None and self.tz is None:
            raise self._no_zone()
        try:
            tz: dt.tzinfo = self.tz if offset is None else _offset(offset)  # type: ignore[assignment]
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

    def _resolve_held(self, secs: int, name: str) -> Iterator[Event | Skipped]:
        """The line after a time that jumped by more than an hour tells what it was. Time only moves
        forward (through midnight, or over a quiet stretch). If this line is a step from the line
        before the held one (within an hour, going forward through midnight if need be) while the
        held time is a jump from both, the held time alone is damaged (one changed clock digit: 8:15
        -> 6:15 between 8:15 lines): a dead letter, and the dating goes on as before it. Anything else
        keeps the held line as it stands (a midnight, a quiet stretch): where the log is too sparse to
        tell, a real midnight is never lost."""
        held, self._held = self._held, None
        assert held is not None and self.prev_secs is not None
        prev = self.prev_secs
        if not _jump(prev, secs) and _jump(prev, held.secs) and _jump(held.secs, secs):
            self.stats.damaged_times += 1
            yield self._skip(held.lineno, "damaged time of day (more than an hour from the lines before and "
                             "after it, which are close: one damaged time, not a midnight)", held.raw, dead=True)
            return
        yield from self._read_held(held, name)

    def _read_held(self, held: _Pending, name: str) -> Iterator[Event | Skipped]:
        """Read a held line as it stands, through the parse loop (repeated-block memory included)."""
        self._as_read = True
        self.stats.lines -= 1  # counted when it was first read
        try:
            yield from self.parse([held.raw], name, held.lineno)
        finally:
            self._as_read = False

    def settle(self) -> Iterator[Event | Skipped]:
        """Nothing more to read for now (a follower at the end of the file): decide a candidate
        block now, so a line is never held back while the log is quiet (it would turn late). A time
        that went back is read as a midnight: no next line says otherwise."""
        if self._held is not None:
            held, self._held = self._held, None
            yield from self._read_held(held, self._name)
        yield from self._end_repeat()

    def remember(self, lines: Iterable[str], name: str) -> None:
        """Read lines already sent (a follower resuming mid-file) only to remember them, so that a
        copy of them pasted later is still recognised. Nothing is emitted or counted."""
        given = self.tz.key if self.tz is not None and self.tz_origin == "--tz" else None
        ghost = FlexnetParser(org=self.org, server=self.server, tz=given, date=self.first_date)
        try:
            for _ in ghost.parse(lines, name):
                pass
            for _ in ghost.finish():
                pass
        except ConfigError:
            return
        self._repeats = ghost._repeats

    @property
    def waiting(self) -> bool:
        """Lines are held back: until a date is known, or while they may repeat an earlier block."""
        return bool(self._pending) or self._repeats.run is not None or self._held is not None

    def to_state(self) -> dict[str, object]:
        """What a follower must keep to resume mid-file (dates, midnight tracking, daemons)."""
        return {"date": self.date.isoformat() if self.date else None, "prev": self.prev_secs, "fold": self.fold,
                "daemons": sorted(self.daemons), "tz": self.tz.key if self.tz else None,
                "tz_origin": self.tz_origin}

    def restore(self, state: dict[str, object]) -> None:
        date = state.get("date")
        self.date = dt.date.fromisoformat(str(date)) if date else None
        prev = state.get("prev")
        self.prev_secs = int(prev) if isinstance(prev, int) else None
        fold = state.get("fold")
        self.fold = int(fold) if isinstance(fold, int) else 0
        daemons = state.get("daemons")
        self.daemons = {str(d) for d in daemons} if isinstance(daemons, list) else set()
        tz = state.get("tz")
        if self.tz is None and isinstance(tz, str):
            self.tz = _zone(tz)
            self.tz_origin = str(state.get("tz_origin") or tz)

    def finish(self) -> Iterator[Event | Skipped]:
        """End of input: a held time is read as a midnight, a candidate repeated block is decided;
        lines still waiting for a date are reported, never guessed."""
        yield from self.settle()
        for p in self._pending:
            yield self._skip(p.lineno, "no date known (no TIMESTAMP or start line in the log; give --date)", p.raw,
                             dead=True)
        self._pending = []

    # ------------------------------------------------------------------ dates

    def _sets_date(self, lineno: int, secs: int, body: str) -> bool:
        new = _date_in(body)
        if new is None:
            return False
        if self.tz is None and body[0] == "S":
            self._zone_from(body)
        self._set_date(lineno, secs, new)
        return True

    def _zone_from(self, body: str) -> None:
        """lmgrd's "Server's System Date and Time: ... ZONE" names the server's zone: take it."""
        m = _SYSTEM_DATE.match(body)
        named = body[m.end():].strip() if m else ""
        if not named:
            return
        iana = iana_zone(named)
        if iana is None:
            self._zone_named = named
            return
        self.tz = ZoneInfo(iana)
        self.tz_origin = f"the log: {named!r} = {iana}"
        self._day_offsets.clear()

    def _no_zone(self) -> ConfigError:
        if self._zone_named:
            why = (f"the log names its time zone {self._zone_named!r}, which is not a Windows zone name "
                   "or an IANA zone (an abbreviation or a translated name)")
        else:
            why = "the log does not name its time zone"
        return ConfigError(f"{self._source}: {why}; give --tz ZONE, an IANA name such as America/New_York "
                           "(--tz UTC if the server's clock is UTC)")

    def _set_date(self, lineno: int, secs: int, new: dt.date) -> None:
        """The date is now ``new`` (at ``secs`` past its midnight); a step back is reported."""
        if self.date is not None and new < self.date:
            self.stats.out_of_order += 1
            self._backs.append((self._repeats.base + len(self._repeats.keys), len(self.stats.warnings)))
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
        if self.tz is None:
            return
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
            if self.tz is None:
                raise self._no_zone()
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
            if _DAMAGED_USAGE.match(body):
                # A checkout or check-in whose text is damaged: counting it as informational would lose
                # a check-in silently (and leave a phantom checkout).
                return self._skip(lineno, "damaged usage line (OUT/IN/DENIED... not followed by ': \"FEATURE\"')",
                                  raw, dead=True)
        if "ereading" in body:
            if _REREADING.match(body):
                self._rereading[daemon] = ts
            elif daemon != LMGRD and _REREAD_DONE.match(body):
                self._rereading.pop(daemon, None)
        if daemon == LMGRD or body[:1] in _RESTART_STARTS:
            if daemon != LMGRD and _VENDOR_START.match(body) and self._in_reread(daemon, ts):
                # lmreread: the vendor daemon lists its features again; checkouts survive.
                self.daemons.add(daemon)
                return self._event(lineno, ts, daemon, "", REREAD, "", "", None, 1, body[:200])
            restarted = self._restarted_daemons(daemon, body)
            if restarted:
                return [self._event(lineno, ts, vendor, "", RESTART, "", "", None, 1, body[:200], sub=i)
                        for i, vendor in enumerate(sorted(restarted))]
        if daemon != LMGRD:
            self.daemons.add(daemon)
        return self._skip(lineno, "informational", raw)

    def _in_reread(self, daemon: str, ts: int) -> bool:
        """Did this daemon, or lmgrd shortly before, announce a reread that has not finished?"""
        if daemon in self._rereading:
            return True
        began = self._rereading.get(LMGRD)
        return began is not None and 0 <= ts - began <= _REREAD_WINDOW * 1_000_000

    def _restarted_daemons(self, daemon: str, body: str) -> set[str]:
        if daemon != LMGRD and (_VENDOR_START.match(body) or _EXITING.match(body)):
            self.daemons.add(daemon)
            self._rereading.pop(daemon, None)
            return {daemon}
        if daemon == LMGRD:
            m = _EXITED.match(body) or _RESTARTED.match(body)
            if m:
                self.daemons.add(m.group(1))
                self._rereading.pop(m.group(1), None)
                return {m.group(1)}
            if _EXITING.match(body):
                self._rereading.clear()
                return set(self.daemons)
        return set()

    def _usage(self, lineno: int, ts: int, daemon: str, kind: str, feature: str, rest: str,
               raw: str) -> Event | Skipped:
        self.daemons.add(daemon)
        action = _ACTION[kind]
        reason = None
        count = 1
        if "(" not in rest:
            pass  # most lines: nothing in parentheses (every pattern below needs one)
        elif action in (OUT, IN):
            rest = _FLAG.sub("", rest)
            lic = _LICENSES.search(rest)
            if lic:
                count = int(lic.group(1))
                rest = rest[:lic.start()] + rest[lic.end():]
        else:
            r = _REASON.search(rest)
            if r:
                reason = _SOCKET_DETAIL.sub(r"(\1)", r.group(1))
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
        proj = _PROJECT.search(rest) if "[" in rest else None
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


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:
        raise ConfigError(f"--tz {name!r} is not a time zone name (like Europe/Berlin or UTC)") from None


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


def check_zone(paths: Iterable[Path], tz: str | None) -> str | None:
    """Refuse (:class:`ConfigError`) before anything is sent a batch of logs that would need a zone
    nobody gave; return the zone they will be read in (None: their lines carry offsets, or none
    makes an event). The parser itself reads the oldest file up to its first event, so the answer
    is the parser's own, and only the head of the file is read."""
    if tz is not None:
        return _zone(tz).key
    ordered = order_rotated(paths)
    if not ordered:
        return None
    probe = FlexnetParser(org="", server="")
    with open(ordered[0], "rb") as fh:
        for item in probe.parse((raw.decode("utf-8", "replace") for raw in fh), ordered[0].name):
            if isinstance(item, Event):
                break
    return probe.tz.key if probe.tz is not None else None


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
        warned = parser.stats.out_of_order
        with open(path, "rb") as fh:
            def lines() -> Iterator[str]:
                for raw in fh:
                    if on_progress is not None:
                        on_progress(len(raw))
                    yield raw.decode("utf-8", "replace")

            items = list(parser.parse(lines(), path.name))
        if parser.stats.out_of_order > warned:
            events = sorted((i for i in items if isinstance(i, Event)), key=lambda e: (e.ts, e.seq))
            parser.stats.warnings.append(
                f"{path.name}: {parser.stats.out_of_order - warned} segment(s) out of order; "
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


def _jump(a: int, b: int) -> int:
    """1 when going from time of day ``a`` to ``b`` (forward, through midnight if need be) is a jump
    of more than an hour, 0 when it is a step (a small step back counts as jitter)."""
    forward = (b - a) % 86400
    return 1 if _MIDNIGHT_STEP < forward < 86400 - _MIDNIGHT_STEP else 0
