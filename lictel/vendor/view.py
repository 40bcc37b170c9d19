"""What the license server's compliance upload will tell the vendor, computed from our own data.

Per license server, feature and daily sample window (docs/vendor-view.md):

``count_used_max``
    the most licenses in use at any instant of the window, in licenses charged (the feature's
    DUP_GROUP rule; checkouts where no rule is known): the largest ``charged_peak`` of the server's
    minute rows in the window.
``ccu_devices``
    concurrent features only: the distinct client devices (hosts, compared without case) that held a
    license of the feature at some instant of the window, checkouts carried into the window included.
    Holding follows the engine's rules (:mod:`lictel.holdings`).
``ud_licensees``, ``ud_users``, ``ud_devices``
    user/device features only: the licenses assigned under the vendor's rule over the 90 windows
    ending this one, from this server's checkouts alone (each license server keeps its own
    assignments): exclusively shared devices take a device license, every other user a user
    license (:mod:`lictel.ud`).
``installed``
    the counted entitlements active on the window's day: those imported for this server
    (``entitlements import --server``), else the organisation's. ``sa_date`` is the newest SA
    (Customer Success Services) date among them, read from the license lines' version field.

Windows are days that start at a configurable time of day in a configurable zone (``Boundary``;
00:00 UTC by default) and are computed at minute resolution: a minute row belongs to the window
that holds its start. Rows run over every window from the first to the last one in which the
server has data, for every feature the server has served.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from lictel import rollups
from lictel.errors import ConfigError
from lictel.holdings import read_rows, replay_starts, segments
from lictel.identity import SQL_DEVICE, SQL_USER, normalize_device
from lictel.timeutil import DAY_US, US, from_us, iso_s, to_us, zone
from lictel.ud import UD, WINDOW_DAYS, Uses, license_model, slide

CSV_COLUMNS = ["server", "feature", "day", "count_used_max", "ccu_devices", "ud_licensees", "installed"]
DETAIL_COLUMNS = ["org", *CSV_COLUMNS, "ud_users", "ud_devices", "checkouts_max", "dup_group", "model", "sa_date",
                  "installed_from", "window_start", "window_stop"]


_iso = functools.lru_cache(maxsize=8192)(iso_s)

#: Counted entitlements by (org, server, feature): (count, start, expiry, SA date); server "" = the org's.
Entitlements = dict[tuple[str, str, str], list[tuple[int, dt.date | None, dt.date, str]]]


@dataclass(frozen=True)
class Boundary:
    """When the daily sample window starts: a time of day (minutes after midnight) in a zone."""

    minute_of_day: int = 0
    tz: str = "UTC"

    @classmethod
    def parse(cls, text: str, tz: str = "UTC") -> Boundary:
        """``HH:MM`` in ``tz``; a ConfigError naming the option otherwise."""
        try:
            zone(tz)
        except ValueError as exc:
            raise ConfigError(f"--window-tz: {exc}") from None
        hh, sep, mm = text.strip().partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60 and len(mm) == 2):
            raise ConfigError(f"--window-start {text!r} is not a time of day like 00:00 or 06:30")
        return cls(int(hh) * 60 + int(mm), tz)

    def label(self) -> str:
        return f"{self.minute_of_day // 60:02d}:{self.minute_of_day % 60:02d} {self.tz}"

    def start(self, day: dt.date) -> int:
        """The instant the window of ``day`` starts (µs)."""
        wall = dt.datetime(day.year, day.month, day.day, tzinfo=zone(self.tz)) + dt.timedelta(
            minutes=self.minute_of_day)
        return to_us(wall)

    def day_of(self, ts_us: int) -> dt.date:
        """The day whose window holds ``ts_us``."""
        local = from_us(ts_us).astimezone(zone(self.tz))
        day = local.date()
        return day if ts_us >= self.start(day) else day - dt.timedelta(days=1)


#: The default: windows are UTC days.
UTC_MIDNIGHT = Boundary()


@dataclass(frozen=True)
class Window:
    day: dt.date
    start: int
    end: int


def windows(boundary: Boundary, first: dt.date, last: dt.date) -> list[Window]:
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 2)]
    starts = [boundary.start(d) for d in days]
    return [Window(d, s, e) for d, s, e in zip(days[:-1], starts[:-1], starts[1:], strict=True)]


@dataclass
class VendorRow:
    org: str
    server: str
    feature: str
    day: dt.date
    window_start: int
    window_stop: int
    model: str
    count_used_max: int = 0
    checkouts_max: int = 0
    dup_group: str = "NONE"
    devices: list[str] = field(default_factory=list)  # as the log wrote them, one per device
    ud_licensees: int = 0
    ud_users: int = 0
    ud_devices: int = 0
    installed: int = 0
    installed_from: str = ""  # "server", "organisation", or "" when none is imported
    sa_date: str = ""

    @property
    def ccu_devices(self) -> int:
        return len(self.devices)

    def values(self, columns: list[str]) -> list[Any]:
        out: list[Any] = []
        for c in columns:
            if c == "day":
                out.append(self.day.isoformat())
            elif c in ("window_start", "window_stop"):
                out.append(_iso(getattr(self, c)))  # every row of a window has the same two
            else:
                out.append(getattr(self, c))
        return out


def vendor_view(client: Client, db: str, models: dict[str, str], org: str | None = None, server: str | None = None,
                feature: str | None = None, first: dt.date | None = None, last: dt.date | None = None,
                boundary: Boundary = UTC_MIDNIGHT) -> list[VendorRow]:
    """Rows per (org, server, feature, window day), sorted; ``first``/``last`` bound the days."""
    cond = ["level = 'pool'", "source = 'license'"]
    params: dict[str, Any] = {}
    for name, value in (("org", org), ("server", server)):
        if value:
            cond.append(f"{name} = {{{name}:String}}")
            params[name] = value
    # A day's window starts at most 14 h before its UTC date and ends less than 3 days after it
    # (a boundary late in the day, in a zone behind UTC).
    lo_us = to_us(dt.datetime.combine(first - dt.timedelta(days=1), dt.time(), dt.UTC)) if first else None
    hi_us = to_us(dt.datetime.combine(last + dt.timedelta(days=3), dt.time(), dt.UTC)) if last else None
    # The extent of each key: whole days below the rollup watermark from the day rollups, the rest
    # from the minutes (a replaced row keeps its key and minute, so no FINAL is needed there).
    part = rollups.split(client, db, lo_us, hi_us)
    where = " AND ".join(cond)
    parts = []
    if part.days:
        parts.append(f"SELECT org, server, feature, first_minute AS a, last_minute AS b FROM {db}.usage_daily FINAL "
                     f"WHERE {where} AND day >= {{day_lo:Date}} AND day < {{day_hi:Date}}")
        params |= {"day_lo": part.day_lo, "day_hi": part.day_hi}
    if part.minute_ranges:
        minutes, more = rollups.minute_condition(part.minute_ranges)
        parts.append(f"SELECT org, server, feature, minute AS a, minute AS b FROM {db}.usage_minute "
                     f"WHERE {where} AND {minutes}")
        params |= more
    result = client.query(
        f"SELECT org, server, feature, toUnixTimestamp(min(a)), toUnixTimestamp(max(b)) "
        f"FROM ({' UNION ALL '.join(parts)}) GROUP BY org, feature, server ORDER BY org, server, feature",
        parameters=params)
    servers: dict[tuple[str, str], list[Any]] = {}
    for o, s, f, lo, hi in result.result_rows:
        ext = servers.setdefault((o, s), [set(), int(lo) * US, int(hi) * US])
        ext[0].add(f)
        ext[1], ext[2] = min(ext[1], int(lo) * US), max(ext[2], int(hi) * US)
    ents = _entitlements(client, db, org)
    plans: dict[str, list[ServerPlan]] = defaultdict(list)
    for (o, s), (features, lo, hi) in servers.items():
        features |= {f for (eo, es, f) in ents if eo == o and es == s}
        if feature:
            features &= {feature}
        d0, d1 = boundary.day_of(lo), boundary.day_of(hi)
        d0, d1 = max(d0, first) if first else d0, min(d1, last) if last else d1
        if not features or d1 < d0:
            continue
        plans[o].append(ServerPlan(s, sorted(features), windows(boundary, d0, d1)))
    rows: list[VendorRow] = []
    for o, plan in plans.items():
        rows += org_view(client, db, o, plan, boundary, models, ents)
    return rows


@dataclass
class ServerPlan:
    """One server's part of the view: its features and its windows."""

    server: str
    features: list[str]
    wins: list[Window]

    def rows(self, org: str, models: dict[str, str]) -> dict[tuple[str, int], VendorRow]:
        return {(f, k): VendorRow(org, self.server, f, w.day, w.start, w.end, license_model(f, models))
                for f in self.features for k, w in enumerate(self.wins)}


def server_view(client: Client, db: str, org: str, server: str, features: list[str], boundary: Boundary,
                first: dt.date, last: dt.date, models: dict[str, str], ents: Entitlements) -> list[VendorRow]:
    """The rows of one server over the windows of ``first`` to ``last``."""
    return org_view(client, db, org, [ServerPlan(server, features, windows(boundary, first, last))], boundary, models,
                    ents)


def org_view(client: Client, db: str, org: str, plans: list[ServerPlan], boundary: Boundary, models: dict[str, str],
             ents: Entitlements) -> list[VendorRow]:
    """The rows of an organisation's servers, each over its own windows. What ClickHouse answers is
    asked once for all of them (the peaks, where replays start, the user/device checkouts); each
    server's events are replayed on their own."""
    rows = {p.server: p.rows(org, models) for p in plans}
    _used_max(client, db, org, plans, boundary, rows)
    concurrent = {p.server: [f for f in p.features if license_model(f, models) != UD] for p in plans}
    # One replay start for every server, valid from the earliest window on (a later server replays
    # a little more than it needs, never less).
    wanted = {s: fs for s, fs in concurrent.items() if fs}
    since = replay_starts(client, db, org, wanted, min(p.wins[0].start for p in plans)) if wanted else {}
    for p in plans:
        if concurrent[p.server]:
            _devices(client, db, org, p.server, concurrent[p.server], p.wins, since[p.server], rows[p.server])
    ud = {p.server: [f for f in p.features if license_model(f, models) == UD] for p in plans}
    if any(ud.values()):
        _licensees(client, db, org, [p for p in plans if ud[p.server]], ud, boundary, rows)
    out: list[VendorRow] = []
    for p in plans:
        _installed(org, p, ents, rows[p.server])
        out += [rows[p.server][(f, k)] for f in p.features for k in range(len(p.wins))]
    return out


def _installed(org: str, plan: ServerPlan, ents: Entitlements, rows: dict[tuple[str, int], VendorRow]) -> None:
    """The counted entitlements active on each window's day: the server's own, else the organisation's."""
    server, features, wins = plan.server, plan.features, plan.wins
    for f in features:
        own = ents.get((org, server, f))
        items, scope = (own, "server") if own else (ents.get((org, "", f), []), "organisation")
        for k, w in enumerate(wins):
            active = [(n, sa) for n, start, expiry, sa in items
                      if (start is None or start <= w.day) and w.day <= expiry]
            if active:
                r = rows[(f, k)]
                r.installed, r.installed_from = sum(n for n, _ in active), scope
                r.sa_date = max(sa for _, sa in active)


@dataclass
class MinutePeaks:
    """A server's minute rows with something held, in time order: the feature (an index into
    ``names``), the minute start (µs) and the peak in licenses charged."""

    names: list[str]
    code: np.ndarray
    minute: np.ndarray
    charged: np.ndarray

    def window_of(self, wins: list[Window]) -> np.ndarray:
        """The index of the window that holds each minute (windows are contiguous and in order)."""
        return np.searchsorted(np.asarray([w.start for w in wins], dtype=np.int64), self.minute, side="right") - 1

    def window_max(self, wins: list[Window]) -> dict[tuple[str, int], int]:
        """The largest charged peak per (feature, window index), for minutes inside the windows."""
        if not len(self.minute):
            return {}
        k = self.window_of(wins)
        inside = (k >= 0) & (k < len(wins))
        n = len(wins)
        flat = np.zeros(len(self.names) * n, dtype=np.int64)
        np.maximum.at(flat, self.code[inside] * n + k[inside], self.charged[inside])
        return {(self.names[i // n], i % n): int(flat[i]) for i in np.flatnonzero(flat).tolist()}


def minute_peaks(client: Client, db: str, org: str, server: str, features: list[str], start: int,
                 end: int) -> MinutePeaks:
    table = client.query_arrow(
        f"SELECT feature, toInt64(toUnixTimestamp(minute)) AS m, charged_peak "
        f"FROM {db}.usage_minute FINAL WHERE level = 'pool' AND source = 'license' AND org = {{org:String}} "
        f"AND server = {{server:String}} AND feature IN {{features:Array(String)}} AND peak > 0 "
        f"AND minute >= toDateTime({{a:Int64}}, 'UTC') AND minute < toDateTime({{b:Int64}}, 'UTC') ORDER BY m",
        parameters={"org": org, "server": server, "features": features, "a": start // US, "b": -(-end // US)})
    coded = pc.dictionary_encode(table.column("feature").combine_chunks())
    return MinutePeaks([str(x) for x in coded.dictionary.to_pylist()],
                       coded.indices.to_numpy().astype(np.int64),
                       table.column("m").to_numpy().astype(np.int64) * US,
                       table.column("charged_peak").to_numpy().astype(np.int64))


def window_day_sql(boundary: Boundary, col: str = "minute") -> str:
    """ClickHouse: the day whose window holds ``col``, as wall-clock arithmetic in the boundary's zone
    (the date of the local time less the boundary's time of day), with parameters ``tz`` and ``off``."""
    return (f"toDate(toDateTime(toUnixTimestamp({col}) + timeZoneOffset(toTimeZone({col}, {{tz:String}})) "
            f"- {{off:Int32}}, 'UTC'))")


def _used_max(client: Client, db: str, org: str, plans: list[ServerPlan], boundary: Boundary,
              rows: dict[str, dict[tuple[str, int], VendorRow]]) -> None:
    """The largest charged (and checkout) minute peak per server, feature and window, and the
    feature's rule (of its newest minute in the window with something held), aggregated by
    ClickHouse. Windows that are whole UTC days below the rollup watermark come from the day rollups
    (``usage_daily``: the same maxima, and the rule where the day had one); the rest from the minutes."""
    start, end = min(p.wins[0].start for p in plans), max(p.wins[-1].end for p in plans)
    keys = {"org": org, "servers": sorted({p.server for p in plans}),
            "features": sorted({f for p in plans for f in p.features})}
    # Servers and features each in a list (the sorting key's columns; a list of pairs would scan the
    # whole table): a pair no plan asked for finds no row below.
    where = ("level = 'pool' AND source = 'license' AND org = {org:String} AND server IN {servers:Array(String)} "
             "AND feature IN {features:Array(String)}")
    found: list[tuple[str, str, dt.date, int, int, str]] = []
    ranges: list[tuple[int | None, int | None]] = [(start, end)]
    part = rollups.split(client, db, start, end) if boundary == UTC_MIDNIGHT else None
    if part is not None and part.days:
        ranges = list(part.minute_ranges)
        for srv, f, day, charged, peak, rules in client.query(
                f"SELECT server, feature, day, bitShiftRight(charged_peak_first, 32), bitShiftRight(peak_first, 32), "
                f"rules FROM {db}.usage_daily FINAL WHERE {where} AND day >= {{lo:Date}} AND day < {{hi:Date}} "
                f"AND peak_first >= 4294967296",  # a minute with something held (peak >= 1)
                parameters=keys | {"lo": part.day_lo, "hi": part.day_hi}).result_rows:
            if len(rules) == 1:
                found.append((str(srv), str(f), day, int(charged), int(peak), str(rules[0])))
            else:  # the rule changed during the day: its newest minute's rule, from the minutes
                ranges.append((rollups.day_us(day), rollups.day_us(day) + DAY_US))
    if ranges:
        cond, params = rollups.minute_condition(ranges)
        result = client.query(
            f"SELECT server, feature, {window_day_sql(boundary)} AS d, max(charged_peak), max(peak), "
            f"argMax(dup_group, minute) FROM {db}.usage_minute FINAL WHERE {where} AND peak > 0 AND {cond} "
            f"GROUP BY server, feature, d",
            parameters=keys | params | {"tz": boundary.tz, "off": boundary.minute_of_day * 60})
        found += [(str(srv), str(f), d, int(c), int(pk), str(rule)) for srv, f, d, c, pk, rule in result.result_rows]
    first = {p.server: p.wins[0].day for p in plans}
    for srv, f, d, charged, peak, rule in found:
        r = rows[srv].get((f, (d - first[srv]).days))
        if r is not None:
            r.count_used_max, r.checkouts_max, r.dup_group = charged, peak, rule


def _devices(client: Client, db: str, org: str, server: str, features: list[str], wins: list[Window],
             since: int | None, rows: dict[tuple[str, int], VendorRow]) -> None:
    """The devices holding each concurrent feature at some instant of each window, from a replay of
    the server's events from ``since`` (holdings.replay_starts)."""
    seen: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    n = len(wins)
    starts = [w.start for w in wins]
    for seg in segments(read_rows(client, db, org, server, features, wins[-1].end, since)):
        if not seg.host:
            continue
        end = seg.end if seg.end is not None else wins[-1].end
        k = max(bisect.bisect_right(starts, seg.start) - 1, 0)
        while k < n and starts[k] < end:
            if wins[k].end > seg.start:
                seen[(seg.feature, k)].setdefault(normalize_device(seg.host), seg.host)
            k += 1
    for key, hosts in seen.items():
        if key in rows:
            rows[key].devices = sorted(hosts.values(), key=str.lower)


def _licensees(client: Client, db: str, org: str, plans: list[ServerPlan], features: dict[str, list[str]],
               boundary: Boundary, rows: dict[str, dict[tuple[str, int], VendorRow]]) -> None:
    """The vendor rule's licenses over the 90 windows ending each window, from each server's own
    uses of each user/device feature (one query for all of them)."""
    first = min(p.wins[0].day for p in plans) - dt.timedelta(days=WINDOW_DAYS - 1)
    wins = windows(boundary, first, max(p.wins[-1].day for p in plans))
    table = client.query_arrow(
        f"SELECT server, feature, toInt64(toUnixTimestamp64Micro(min(ts))) AS t, u, d FROM (SELECT server, feature, "
        f"ts, {SQL_USER} AS u, {SQL_DEVICE} AS d FROM {db}.raw_events WHERE org = {{org:String}} "
        f"AND server IN {{servers:Array(String)}} AND feature IN {{features:Array(String)}} AND action = 'OUT' "
        f"AND vendor != 'SESSIONS' AND ts >= fromUnixTimestamp64Micro({{a:Int64}}, 'UTC') "
        f"AND ts < fromUnixTimestamp64Micro({{b:Int64}}, 'UTC')) "
        f"GROUP BY server, feature, toStartOfMinute(ts), u, d ORDER BY server, feature",
        parameters={"org": org, "servers": sorted(features),
                    "features": sorted({f for fs in features.values() for f in fs}),
                    "a": wins[0].start, "b": wins[-1].end})
    if table.num_rows == 0:
        return
    day = np.searchsorted(np.asarray([w.start for w in wins], dtype=np.int64),
                          table.column("t").to_numpy().astype(np.int64), side="right") - 1
    users, u_idx = np.unique(np.asarray(table.column("u").to_pylist(), dtype=object), return_inverse=True)
    devs, d_idx = np.unique(np.asarray(table.column("d").to_pylist(), dtype=object), return_inverse=True)
    names = [str(x) for x in users], [str(x) for x in devs]
    server_col = table.column("server").to_pylist()
    feature_col = table.column("feature").to_pylist()
    # The rows come grouped by (server, feature): one slide over each group's uses.
    bounds = [0] + [i for i in range(1, table.num_rows)
                    if server_col[i] != server_col[i - 1] or feature_col[i] != feature_col[i - 1]] + [table.num_rows]
    until = dt.date(1970, 1, 1) + dt.timedelta(days=len(wins) - 1)
    # Window k of a server's report is window k + offset of the list here.
    offset = {p.server: (p.wins[0].day - first).days for p in plans}
    for lo, hi in itertools.pairwise(bounds):
        server, feature = str(server_col[lo]), str(feature_col[lo])
        if feature not in features[server]:
            continue  # a user/device feature of another server, not of this one
        order = lo + np.argsort(day[lo:hi], kind="stable")
        uses = Uses(day[order].astype(np.int64), u_idx[order].astype(np.int64), d_idx[order].astype(np.int64), *names)
        mine = rows[server]
        for r in slide(org, feature, uses, explain=True, until=until, optimum=False):
            row = mine.get((feature, (r.day - dt.date(1970, 1, 1)).days - offset[server]))
            if row is None or r.vendor is None:
                continue
            row.ud_licensees, row.ud_users, row.ud_devices = r.vendor_rule, len(r.vendor.users), len(r.vendor.devices)


def _entitlements(client: Client, db: str, org: str | None) -> Entitlements:
    """Counted entitlements by (org, server, feature): (count, start, expiry, SA date)."""
    from lictel.entitlements import Entitlement

    where, params = ("AND org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(f"SELECT org, server, feature, count, start, expiry, version FROM {db}.entitlements FINAL "
                          f"WHERE uncounted = 0 {where}", parameters=params)
    out: Entitlements = defaultdict(list)
    for o, s, f, n, start, expiry, version in result.result_rows:
        sa = Entitlement(o, "", 0, f, "", version, 0, False, None, expiry, None, "", "", 0, "", "").sa_date()
        out[(o, s, f)].append((int(n), start, expiry, sa))
    return out

