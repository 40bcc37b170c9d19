"""Who held licenses when: the holding segments of checkouts, by the engine's rules.

The one place outside the engine that says what a checkout holds over time (DESIGN.md,
"Concurrency semantics"), for the reports that need the holders rather than the level (the
vendor's device list, the holders at a peak minute):

- an OUT opens a checkout of ``count`` licenses on its identity ``(org, server, vendor, feature,
  user, host, handle)``;
- an IN of ``n`` closes the identity's oldest open checkouts first; a partial IN reduces the oldest;
  an IN with nothing open is an orphan and changes nothing;
- a RESTART closes every open checkout of its ``(org, server, vendor)``, whatever the feature;
- events are applied in ``(ts, seq)`` order, and every event at one instant is simultaneous: a
  stretch that opens and closes at the same instant held nothing at any instant and is not given.

A :class:`Segment` is a stretch of constant count: licenses held over ``[start, end)`` (µs), ``end``
``None`` when still held at the end of the input. At every instant ``t`` the counts of the segments
with ``start <= t < end`` add up to the engine's ``c(t)`` of each pool (a test checks this against
the engine).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from clickhouse_connect.driver.client import Client

from lictel import rollups

Identity = tuple[str, str, str, str, str, str, str]
_MINUTE = 60_000_000


class Segment(NamedTuple):
    org: str
    server: str
    vendor: str
    feature: str
    user: str
    host: str
    handle: str
    count: int  # type: ignore[assignment]  # licenses held; shadows tuple.count
    start: int
    end: int | None
    ended_by: str | None  # IN, RESTART, or None while still held


class Checkouts:
    """The open checkouts of every identity, kept by the engine's rules one event at a time; what
    :func:`segments` and the chargeback's replay (:mod:`lictel.reports.chargeback`) build on.

    ``held[identity]`` lists its open checkouts oldest first, each ``[licenses, since]``; an identity
    with none is not in it."""

    def __init__(self) -> None:
        self.held: dict[Identity, deque[list[int]]] = {}
        self._by_daemon: dict[tuple[str, str, str], set[Identity]] = {}

    def check_out(self, ident: Identity, count: int, t: int) -> None:
        q = self.held.get(ident)
        if q is None:
            self.held[ident] = deque(([count, t],))
            self._by_daemon.setdefault(ident[:3], set()).add(ident)  # type: ignore[arg-type]
        else:
            q.append([count, t])

    def check_in(self, ident: Identity, count: int) -> list[tuple[int, int]]:
        """Close ``count`` licenses of the identity's oldest open checkouts: the ``(licenses, since)``
        taken from each, oldest first (empty for an orphan check-in)."""
        taken: list[tuple[int, int]] = []
        self._close(ident, count, taken)
        return taken

    def change(self, action: str, ident: Identity, count: int, t: int) -> int:
        """Apply an OUT or IN of ``count`` licenses; return by how much the identity's holding changed
        (for a caller that needs only the total, without the pieces :meth:`check_in` lists)."""
        if action == "OUT":
            self.check_out(ident, count, t)
            return count
        return -self._close(ident, count, None)

    def _close(self, ident: Identity, count: int, taken: list[tuple[int, int]] | None) -> int:
        """The one check-in rule: close up to ``count`` licenses of the oldest open checkouts first;
        return how many were closed, and list each piece in ``taken`` when one is given."""
        q = self.held.get(ident)
        if not q:
            return 0
        n = count
        while n and q:
            first = q[0]
            held = first[0]
            take = held if held <= n else n
            if taken is not None:
                taken.append((take, first[1]))
            n -= take
            if take == held:
                q.popleft()
            else:
                first[0] = held - take
        if not q:
            del self.held[ident]
            self._by_daemon[ident[:3]].discard(ident)  # type: ignore[index]
        return count - n

    def restart(self, daemon: tuple[str, str, str]) -> list[tuple[Identity, deque[list[int]]]]:
        """Close every open checkout of ``(org, server, vendor)``: each identity with what it held."""
        return [(ident, self.held.pop(ident)) for ident in self._by_daemon.pop(daemon, ())]


def segments(rows: Iterable[Sequence[Any]]) -> Iterator[Segment]:
    """Replay ``(org, server, vendor, feature, action, user, host, handle, count, ts)`` rows given in
    ``(ts, seq)`` order, without duplicates, and yield every holding segment as it closes, then the
    ones still open."""
    books = Checkouts()
    for o, server, vendor, f, action, user, host, handle, count, t in rows:
        if action == "RESTART":
            for ident, q in books.restart((o, server, vendor)):
                for n, since in q:
                    if t > since:
                        yield Segment(*ident, n, since, t, "RESTART")
            continue
        ident = (o, server, vendor, f, user, host, handle or "")
        if action == "OUT":
            books.check_out(ident, int(count), t)
        elif action == "IN":
            for take, since in books.check_in(ident, int(count)):
                if t > since:
                    yield Segment(*ident, take, since, t, "IN")
    for ident, q in books.held.items():
        for n, since in q:
            yield Segment(*ident, n, since, None, None)


def read_rows(client: Client, db: str, org: str, server: str, features: Iterable[str] | None = None,
              end_us: int | None = None, start_us: int | None = None) -> Sequence[Sequence[Any]]:
    """The rows :func:`segments` replays for one server: its OUT and IN events (of ``features``, all
    when None) and its RESTARTs, from ``start_us`` (the first stored event when None; see
    :func:`replay_start`) to ``end_us``, deduplicated and in ``(ts, seq)`` order. Session events are
    not checkouts and are left out."""
    params: dict[str, Any] = {"org": org, "server": server}
    feature_cond = ""
    if features is not None:
        feature_cond = "AND feature IN {features:Array(String)}"
        params["features"] = sorted(features)
    bounds = ""
    if end_us is not None:
        bounds += " AND ts < fromUnixTimestamp64Micro({end:Int64}, 'UTC')"
        params["end"] = end_us
    if start_us is not None:
        bounds += " AND ts >= fromUnixTimestamp64Micro({start:Int64}, 'UTC')"
        params["start"] = start_us
    result = client.query(
        f"SELECT org, server, vendor, feature, action, user, host, ifNull(handle, ''), count, "
        f"toUnixTimestamp64Micro(ts) FROM {db}.raw_events FINAL WHERE org = {{org:String}} AND server = "
        f"{{server:String}} AND vendor != 'SESSIONS' AND ((action IN ('OUT', 'IN') {feature_cond}) "
        f"OR action = 'RESTART'){bounds} ORDER BY ts, seq", parameters=params)
    return result.result_rows


def server_features(client: Client, db: str, org: str, server: str) -> list[str]:
    """The features one server has checked out."""
    return features_by_server(client, db, org, [server]).get(server, [])


def features_by_server(client: Client, db: str, org: str, servers: Iterable[str]) -> dict[str, list[str]]:
    """The features each of ``servers`` has checked out, in one query."""
    out: dict[str, list[str]] = {}
    for server, f in client.query(
            f"SELECT DISTINCT server, feature FROM {db}.raw_events WHERE org = {{org:String}} AND server IN "
            f"{{servers:Array(String)}} AND action = 'OUT' AND vendor != 'SESSIONS' ORDER BY server, feature",
            parameters={"org": org, "servers": sorted(set(servers))}).result_rows:
        out.setdefault(str(server), []).append(str(f))
    return out


def last_events(client: Client, db: str, org: str, servers: Iterable[str]) -> dict[str, int]:
    """The time (µs) of each server's newest stored event, in one query."""
    return {str(s): int(t) for s, t in client.query(
        f"SELECT server, toUnixTimestamp64Micro(max(ts)) FROM {db}.raw_events WHERE org = {{org:String}} "
        f"AND server IN {{servers:Array(String)}} GROUP BY server",
        parameters={"org": org, "servers": sorted(set(servers))}).result_rows}


def replay_start(client: Client, db: str, org: str, server: str, features: Iterable[str], at_us: int) -> int | None:
    """Where a replay of one server's events (of ``features``) may start and still give, at every
    instant from ``at_us`` on, what the whole history gives; ``None``: only from the first event.

    That is the start of the run of held minutes of each feature's pool (stored minute rows with a
    peak above 0) that reaches ``at_us``, the earliest over the features: nothing of the feature is
    held in the minute before it. A replay that starts later than the history misses OUTs, never
    INs, so per identity it holds at most what the history holds (an IN closes what it finds): where
    the history holds nothing, the replay holds nothing, and from there the two are the same. The
    run is looked for 2 days back, then 16, 128 and 1024.

    A minute without a row held nothing only up to the server's last stored minute: past it the
    stream has not made minutes final yet, and what was held at the end of the rows may be held
    still, so the run is looked for from there."""
    return replay_starts(client, db, org, {server: list(features)}, at_us)[server]


def replay_starts(client: Client, db: str, org: str, features: dict[str, list[str]],
                  at_us: int) -> dict[str, int | None]:
    """:func:`replay_start` of several servers (server -> its features) at once: one query for their
    last stored minutes, then one per span looked back."""
    servers = sorted(features)
    # The end of each one's last stored minute.
    known = {s: m + 60 for s, m in rollups.last_minutes(client, db, org, servers).items()}
    at_minute = at_us - at_us % _MINUTE
    first = {s: min(at_minute, known[s] * 1_000_000) if s in known else at_minute for s in servers}
    since: dict[str, int | None] = dict(first)
    pending = sorted({(s, str(f)) for s in servers for f in features[s]})
    span = 2 * 1440 * _MINUTE
    while pending:
        if span > 1024 * 1440 * _MINUTE:
            for s, _ in pending:
                since[s] = None
            break
        lo = {s: first[s] - span for s, _ in pending}
        held: dict[tuple[str, str], list[int]] = {(str(s), str(f)): list(m) for s, f, m in client.query(
            f"SELECT server, feature, arraySort(groupArray(toInt64(toUnixTimestamp(minute)))) FROM {db}.usage_minute "
            f"FINAL WHERE level = 'pool' AND source = 'license' AND org = {{org:String}} AND server IN "
            f"{{servers:Array(String)}} AND feature IN {{features:Array(String)}} AND peak > 0 "
            f"AND minute >= toDateTime({{a:Int64}}, 'UTC') AND minute < toDateTime({{b:Int64}}, 'UTC') "
            f"GROUP BY server, feature",
            # A list each of servers and features, the sorting key's columns (2.4 times faster than a
            # list of pairs on a year of minutes); pairs not pending are not looked at below.
            parameters={"org": org, "servers": sorted({s for s, _ in pending}),
                        "features": sorted({f for _, f in pending}), "a": min(lo.values()) // 1_000_000,
                        "b": max(first[s] for s, _ in pending) // 1_000_000}).result_rows}
        still = []
        for s, f in pending:
            ms = np.asarray(held.get((s, f), []), dtype=np.int64) * 1_000_000
            ms = ms[(ms >= lo[s]) & (ms < first[s])]
            if not len(ms) or ms[-1] < first[s] - _MINUTE:
                continue  # nothing held in the minute before: the replay may start at ``first``
            breaks = np.flatnonzero(np.diff(ms) > _MINUTE)
            start = None
            if len(breaks):
                start = int(ms[breaks[-1] + 1])
            elif ms[0] > lo[s]:
                start = int(ms[0])
            cur = since[s]
            if start is None:
                still.append((s, f))  # held throughout the span: look further back
            elif cur is not None:
                since[s] = min(cur, start)
        pending = still
        span *= 8
    return since


def holders_at_peak(segs: Iterable[Segment], minute: int, minute_us: int = 60_000_000) -> tuple[int, list[Segment]]:
    """Who held licenses at the instant of the minute ``[minute, minute + 1 min)`` where the most
    were held (the first such instant; the minute's start counts what was carried in), and that
    instant. ``segs`` are the segments of one pool."""
    end = minute + minute_us
    live = [s for s in segs if s.start < end and (s.end is None or s.end > minute)]
    best, at = -1, minute
    for t in sorted({minute} | {s.start for s in live if s.start > minute}):
        level = sum(s.count for s in live if s.start <= t and (s.end is None or t < s.end))
        if level > best:
            best, at = level, t
    return at, [s for s in live if s.start <= at and (s.end is None or at < s.end)]
