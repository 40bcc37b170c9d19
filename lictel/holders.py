"""Who used the licenses: holders at an instant, license-hours per user and per host, and distinct
users and hosts per day, all from the holding segments of :mod:`lictel.holdings` (the engine's
OUT/IN/RESTART rules), replayed from where the history lets a replay start.

A segment counts toward a range for the part of ``[start, end)`` it covers; one still held at the
end of the data is counted to the range's end (or the last stored event, when that is earlier):
nothing says when it will be returned.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from lictel.holdings import (
    Segment,
    features_by_server,
    holders_at_peak,
    last_events,
    read_rows,
    replay_starts,
    segments,
)
from lictel.timeutil import MINUTE_US, US, local_midnight_us


def pool_segments(client: Client, db: str, org: str, server: str, features: list[str], start: int,
                  end: int) -> list[Segment]:
    """The segments of ``features`` on one server that overlap ``[start, end)`` (µs)."""
    return list(_overlapping(client, db, org, {server: features}, start, end))


def org_segments(client: Client, db: str, org: str, servers: list[str], feature: str | None, start: int,
                 end: int) -> Iterator[Segment]:
    """The segments of ``feature`` (every feature when None) on ``servers`` of ``org`` that overlap
    ``[start, end)`` (µs); each server's features and where its replay may start are found for all
    servers at once."""
    features = {s: [feature] for s in servers} if feature else features_by_server(client, db, org, servers)
    return _overlapping(client, db, org, features, start, end)


def _overlapping(client: Client, db: str, org: str, features: dict[str, list[str]], start: int,
                 end: int) -> Iterator[Segment]:
    starts = replay_starts(client, db, org, features, start)
    for srv, feats in features.items():
        if feats:
            yield from (s for s in segments(read_rows(client, db, org, srv, feats, end, starts[srv]))
                        if s.start < end and (s.end is None or s.end > start))


def servers_of(client: Client, db: str, org: str, feature: str | None) -> list[str]:
    """The license servers with raw events of ``org`` (and ``feature``)."""
    cond, params = "org = {org:String} AND vendor != 'SESSIONS'", {"org": org}
    if feature:
        cond += " AND feature = {feature:String}"
        params["feature"] = feature
    return [str(s) for (s,) in client.query(f"SELECT DISTINCT server FROM {db}.raw_events WHERE {cond} "
                                            "ORDER BY server", parameters=params).result_rows]


@dataclass(frozen=True)
class Holder:
    server: str
    user: str
    host: str
    count: int
    since: int  # µs


def holders_at(client: Client, db: str, org: str, feature: str, minute: int,
               server: str | None = None) -> list[tuple[str, int, list[Holder]]]:
    """Per server: the instant of the minute ``[minute, minute + 1 min)`` where the most licenses of
    ``feature`` were held (the minute's start counts what was carried in) and who held them then."""
    minute -= minute % MINUTE_US
    out = []
    for srv in [server] if server else servers_of(client, db, org, feature):
        segs = pool_segments(client, db, org, srv, [feature], minute, minute + MINUTE_US)
        if not segs:
            continue
        at, held = holders_at_peak(segs, minute)
        by: dict[tuple[str, str], list[int]] = {}
        for s in held:
            cell = by.setdefault((s.user, s.host), [0, s.start])
            cell[0] += s.count
            cell[1] = min(cell[1], s.start)
        out.append((srv, at, sorted((Holder(srv, u, h, n, since) for (u, h), (n, since) in by.items()),
                                    key=lambda x: (-x.count, x.user, x.host))))
    return out


def license_hours(client: Client, db: str, org: str, feature: str | None, start: int, end: int,
                  by: str) -> list[tuple[str, float, int]]:
    """License-hours per user (``by="user"``) or per host over ``[start, end)``, largest first:
    (name, license-hours, checkouts begun in the range)."""
    hours: dict[str, float] = defaultdict(float)
    begun: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
    servers = servers_of(client, db, org, feature)
    last: dict[str, int] | None = None
    for s in org_segments(client, db, org, servers, feature, start, end):
        if s.end is None and last is None:
            last = last_events(client, db, org, servers)  # only when a checkout is still open
        stop = min(end, s.end if s.end is not None else max(last.get(s.server, 0) if last else 0, s.start))
        name = s.user if by == "user" else s.host
        hours[name] += s.count * max(0, stop - max(start, s.start)) / US / 3600
        if s.start >= start:
            begun[name].add((s.server, s.feature, s.start))
    return sorted(((n, h, len(begun[n])) for n, h in hours.items()), key=lambda x: (-x[1], x[0]))


def distinct_per_day(client: Client, db: str, org: str, feature: str | None, first: dt.date, last: dt.date,
                     tz: str = "UTC") -> list[tuple[str, dt.date, int, int]]:
    """Per feature and local day of ``tz``: the distinct users and hosts that held a license of it at
    some instant of the day."""
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    edges = [local_midnight_us(d, tz) for d in days] + [local_midnight_us(last + dt.timedelta(days=1), tz)]
    users: dict[tuple[str, int], set[str]] = defaultdict(set)
    hosts: dict[tuple[str, int], set[str]] = defaultdict(set)
    for s in org_segments(client, db, org, servers_of(client, db, org, feature), feature, edges[0], edges[-1]):
        k = max(0, bisect.bisect_right(edges, s.start) - 1)
        stop = s.end if s.end is not None else edges[-1]
        while k < len(days) and edges[k] < stop:
            users[(s.feature, k)].add(s.user)
            hosts[(s.feature, k)].add(s.host.lower())
            k += 1
    keys = sorted(users, key=lambda x: (x[0], x[1]))
    return [(f, days[k], len(users[(f, k)]), len(hosts[(f, k)])) for f, k in keys]
