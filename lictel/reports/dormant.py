"""Waste: releasable user/device assignments, oversized entitlements, phantom checkouts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.holdings import read_rows, replay_start, segments, server_features
from lictel.reports.common import (
    Report,
    Scope,
    charged_levels,
    cover,
    entitled_on,
    entitlements,
    key_ranges,
    stored_range,
    with_idle,
)
from lictel.timeutil import DAY_US, MINUTE_US, US, iso_in, us_date
from lictel.ud import UD, license_model


def dormant(client: Client, db: str, scope: Scope, models: dict[str, str], days: int = 30, ratio: float = 0.5,
            held_hours: float = 24.0, as_of: dt.date | None = None) -> Report:
    """Three kinds of waste: user/device assignments unused for ``days`` (releasable), concurrent
    entitlements whose 99th percentile stays below ``ratio`` of the entitlement, and checkouts held
    longer than ``held_hours`` (phantoms)."""
    rows: list[list[Any]] = []
    rows += [[*r, 1] for r in _releasable(client, db, scope, models, days, as_of)]
    rows += [[*r, 1] for r in _oversized(client, db, scope, models, ratio)]
    rows += _phantoms(client, db, scope, held_hours)
    return Report("Dormant licenses", ["kind", "org", "feature", "who", "detail", "since", "days", "checkouts"], rows,
                  [f"releasable: a user/device assignment (held 90 days after its last use) unused for {days}+ days; "
                   f"oversized: 99th percentile of the minute peaks below {ratio:.0%} of the entitlement; "
                   f"phantom: a checkout held {held_hours:g}+ hours that no check-in ended: never checked in, or "
                   "released only by a daemon restart. A long checkout that ended with a check-in (a multi-day "
                   "job) is use, not a phantom. Identical phantoms (same holder, server and ending) are one row: "
                   "checkouts counts them, since is the first, days the longest held."])


def _releasable(client: Client, db: str, scope: Scope, models: dict[str, str], days: int,
                as_of: dt.date | None) -> list[list[Any]]:
    where, params = Scope(scope.org, scope.feature).where()
    result = client.query(
        f"SELECT org, feature, tupleElement(p, 1) AS user, tupleElement(p, 2) AS device, max(day) FROM "
        f"(SELECT org, feature, day, arrayJoin(groupUniqArrayMerge(pairs)) AS p FROM {db}.ud_daily "
        f"WHERE {where} GROUP BY org, feature, day) GROUP BY org, feature, user, device", parameters=params)
    last_user: dict[tuple[str, str, str], dt.date] = {}
    last_dev: dict[tuple[str, str, str], dt.date] = {}
    newest: dict[tuple[str, str], dt.date] = {}
    for o, f, u, d, day in result.result_rows:
        if license_model(f, models) != UD:
            continue
        for table, key in ((last_user, (o, f, u)), (last_dev, (o, f, d))):
            table[key] = max(day, table.get(key, day))
        newest[(o, f)] = max(day, newest.get((o, f), day))
    rows = []
    for kind, table in (("user", last_user), ("device", last_dev)):
        for (o, f, who), day in sorted(table.items()):
            ref = as_of or newest[(o, f)]
            idle = (ref - day).days
            if days <= idle < 90:
                rows.append(["releasable", o, f, who, f"{kind} assignment, free on "
                             f"{(day + dt.timedelta(days=90)).isoformat()} if unused", day.isoformat(), idle])
    return rows


def _oversized(client: Client, db: str, scope: Scope, models: dict[str, str], ratio: float) -> list[list[Any]]:
    rng = stored_range(client, db, scope)
    if rng is None:
        return []
    ranges = key_ranges(client, db, scope)
    rows = []
    for (o, f), items in sorted(entitlements(client, db, scope.org).items()):
        if (scope.feature and f != scope.feature) or license_model(f, models) == UD:
            continue
        # A feature with data: its own stored range; one never used: the whole monitored range.
        start, end = ranges.get((o, "", f), rng)
        total = (end - start) // MINUTE_US
        ent = entitled_on(items, us_date(end - 1))
        if not ent:
            continue
        dist = with_idle(charged_levels(client, db, Scope(o, f, start, end), "estate").get((o, "", f), []), total)
        p99 = cover(dist, total, 0.99) if dist else 0
        if p99 < ratio * ent:
            rows.append(["oversized", o, f, "", f"99th percentile {p99} of entitlement {ent} "
                         f"(peak {dist[-1][0] if dist else 0}); {ent - max(p99, dist[-1][0] if dist else 0)} "
                         "never used", iso_in(start, scope.tz), total // 1440])
    return rows


def _phantoms(client: Client, db: str, scope: Scope, held_hours: float) -> list[list[Any]]:
    """Checkouts begun in the scope that no check-in ended, held ``held_hours`` or more: from the
    holding segments of :mod:`lictel.holdings` (the engine's rules: an IN closes the identity's
    oldest open checkout, a restart closes them all), so a check-in is never counted twice."""

    where, params = scope.where("ts", seconds=False)
    # The servers with checkouts in the scope, each with its newest event of all.
    servers = client.query(
        f"SELECT org, server, toUnixTimestamp64Micro(max(ts)) FROM {db}.raw_events GROUP BY org, server "
        f"HAVING countIf(vendor != 'SESSIONS' AND {where}) > 0 ORDER BY org, server", parameters=params).result_rows
    limit = int(held_hours * 3600 * US)
    # (org, feature, who, server, how it ended) -> [checkouts, first checkout, longest held]
    groups: dict[tuple[str, str, str, str, str], list[int]] = {}
    for o, server, newest in servers:
        features = [scope.feature] if scope.feature else None
        since = None if scope.start is None else replay_start(client, db, o, server, features or server_features(
            client, db, o, server), scope.start)
        # Every later event counts (a checkout of the scope may be returned after it).
        for seg in segments(read_rows(client, db, o, server, features, None, since)):
            if seg.ended_by == "IN" or (scope.start is not None and seg.start < scope.start) or (
                    scope.end is not None and seg.start >= scope.end):
                continue  # ended with a check-in: use, however long; or begun outside the scope
            forced = seg.ended_by == "RESTART"
            held = (seg.end if forced and seg.end is not None else int(newest)) - seg.start
            if held < limit:
                continue
            how = ("released only by a daemon restart" if forced
                   else "never checked in (still held at the end of the data)")
            g = groups.setdefault((o, seg.feature, f"{seg.user}@{seg.host}", server, how), [0, seg.start, 0])
            g[0] += 1
            g[1] = min(g[1], seg.start)
            g[2] = max(g[2], held)
    rows = [["phantom", o, f, who, f"server {server}; {how}", iso_in(first, scope.tz), round(longest / DAY_US, 2), n]
            for (o, f, who, server, how), (n, first, longest) in groups.items()]
    rows.sort(key=lambda r: (r[1], r[2], r[5], r[3]))
    return rows


