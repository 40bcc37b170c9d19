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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from lictel.errors import ConfigError
from lictel.holdings import read_rows, replay_start, segments
from lictel.identity import SQL_DEVICE, SQL_USER, normalize_device
from lictel.reports.common import IN_ORDER
from lictel.timeutil import US, from_us, to_us, zone
from lictel.ud import UD, WINDOW_DAYS, Uses, license_model, slide

CSV_COLUMNS = ["server", "feature", "day", "count_used_max", "ccu_devices", "ud_licensees", "installed"]
DETAIL_COLUMNS = ["org", *CSV_COLUMNS, "ud_users", "ud_devices", "checkouts_max", "dup_group", "model", "sa_date",
                  "installed_from", "window_start", "window_stop"]


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
        from lictel.timeutil import iso_s

        out: list[Any] = []
        for c in columns:
            if c == "day":
                out.append(self.day.isoformat())
            elif c in ("window_start", "window_stop"):
                out.append(iso_s(getattr(self, c)))
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
    if first:
        cond.append("minute >= toDateTime({lo:Int64}, 'UTC')")
        params["lo"] = to_us(dt.datetime.combine(first - dt.timedelta(days=1), dt.time(), dt.UTC)) // US
    if last:
        cond.append("minute < toDateTime({hi:Int64}, 'UTC')")
        params["hi"] = to_us(dt.datetime.combine(last + dt.timedelta(days=3), dt.time(), dt.UTC)) // US
    # The extent of each key: a replaced row keeps its key and minute, so no FINAL is needed.
    result = client.query(
        f"SELECT org, server, feature, toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) "
        f"FROM {db}.usage_minute WHERE {' AND '.join(cond)} GROUP BY org, feature, server "
        f"ORDER BY org, server, feature", parameters=params, settings=IN_ORDER)
    servers: dict[tuple[str, str], list[Any]] = {}
    for o, s, f, lo, hi in result.result_rows:
        ext = servers.setdefault((o, s), [set(), int(lo) * US, int(hi) * US])
        ext[0].add(f)
        ext[1], ext[2] = min(ext[1], int(lo) * US), max(ext[2], int(hi) * US)
    ents = _entitlements(client, db, org)
    rows: list[VendorRow] = []
    for (o, s), (features, lo, hi) in servers.items():
        features |= {f for (eo, es, f) in ents if eo == o and es == s}
        if feature:
            features &= {feature}
        d0, d1 = boundary.day_of(lo), boundary.day_of(hi)
        d0, d1 = max(d0, first) if first else d0, min(d1, last) if last else d1
        if not features or d1 < d0:
            continue
        rows += server_view(client, db, o, s, sorted(features), boundary, d0, d1, models, ents)
    return rows


def server_view(client: Client, db: str, org: str, server: str, features: list[str], boundary: Boundary,
                first: dt.date, last: dt.date, models: dict[str, str],
                ents: dict[tuple[str, str, str], list[tuple[int, dt.date | None, dt.date, str]]]) -> list[VendorRow]:
    """The rows of one server over the windows of ``first`` to ``last``."""
    wins = windows(boundary, first, last)
    starts = [w.start for w in wins]
    rows = {(f, k): VendorRow(org, server, f, w.day, w.start, w.end, license_model(f, models))
            for f in features for k, w in enumerate(wins)}
    _used_max(client, db, org, server, features, boundary, wins, rows)
    concurrent = [f for f in features if license_model(f, models) != UD]
    if concurrent:
        _devices(client, db, org, server, concurrent, wins, starts, rows)
    for f in features:
        if license_model(f, models) == UD:
            _licensees(client, db, org, server, f, boundary, first, last, rows)
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
    return [rows[(f, k)] for f in features for k in range(len(wins))]


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


def _used_max(client: Client, db: str, org: str, server: str, features: list[str], boundary: Boundary,
              wins: list[Window], rows: dict[tuple[str, int], VendorRow]) -> None:
    """The largest charged (and checkout) minute peak per feature and window, and the feature's rule
    (of its newest minute in the window), aggregated by ClickHouse."""
    result = client.query(
        f"SELECT feature, {window_day_sql(boundary)} AS d, max(charged_peak), max(peak), argMax(dup_group, minute) "
        f"FROM {db}.usage_minute FINAL WHERE level = 'pool' AND source = 'license' AND org = {{org:String}} "
        f"AND server = {{server:String}} AND feature IN {{features:Array(String)}} AND peak > 0 "
        f"AND minute >= toDateTime({{a:Int64}}, 'UTC') AND minute < toDateTime({{b:Int64}}, 'UTC') GROUP BY feature, d",
        parameters={"org": org, "server": server, "features": features, "a": wins[0].start // US,
                    "b": -(-wins[-1].end // US), "tz": boundary.tz, "off": boundary.minute_of_day * 60})
    first = wins[0].day
    for f, d, charged, peak, rule in result.result_rows:
        r = rows.get((f, (d - first).days))
        if r is not None:
            r.count_used_max, r.checkouts_max, r.dup_group = int(charged), int(peak), str(rule)


def _devices(client: Client, db: str, org: str, server: str, features: list[str], wins: list[Window],
             starts: list[int], rows: dict[tuple[str, int], VendorRow]) -> None:
    """The devices holding each concurrent feature at some instant of each window."""
    seen: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    n = len(wins)
    since = replay_start(client, db, org, server, features, wins[0].start)
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


def _licensees(client: Client, db: str, org: str, server: str, feature: str, boundary: Boundary, first: dt.date,
               last: dt.date, rows: dict[tuple[str, int], VendorRow]) -> None:
    """The vendor rule's licenses over the 90 windows ending each window, from this server's uses."""
    back = first - dt.timedelta(days=WINDOW_DAYS - 1)
    wins = windows(boundary, back, last)
    table = client.query_arrow(
        f"SELECT toInt64(toUnixTimestamp64Micro(min(ts))) AS t, u, d FROM (SELECT ts, {SQL_USER} AS u, "
        f"{SQL_DEVICE} AS d FROM {db}.raw_events WHERE org = {{org:String}} AND server = {{server:String}} "
        f"AND feature = {{feature:String}} AND action = 'OUT' AND vendor != 'SESSIONS' "
        f"AND ts >= fromUnixTimestamp64Micro({{a:Int64}}, 'UTC') "
        f"AND ts < fromUnixTimestamp64Micro({{b:Int64}}, 'UTC')) "
        f"GROUP BY toStartOfMinute(ts), u, d",
        parameters={"org": org, "server": server, "feature": feature, "a": wins[0].start, "b": wins[-1].end})
    if table.num_rows == 0:
        return
    day = np.searchsorted(np.asarray([w.start for w in wins], dtype=np.int64),
                          table.column("t").to_numpy().astype(np.int64), side="right") - 1
    users, u_idx = np.unique(np.asarray(table.column("u").to_pylist(), dtype=object), return_inverse=True)
    devs, d_idx = np.unique(np.asarray(table.column("d").to_pylist(), dtype=object), return_inverse=True)
    order = np.argsort(day, kind="stable")
    uses = Uses(day[order].astype(np.int64), u_idx[order].astype(np.int64), d_idx[order].astype(np.int64),
                [str(x) for x in users], [str(x) for x in devs])
    offset = WINDOW_DAYS - 1  # window k of the report is window k + offset of the extended list
    until = dt.date(1970, 1, 1) + dt.timedelta(days=len(wins) - 1)
    for r in slide(org, feature, uses, explain=True, until=until):
        k = (r.day - dt.date(1970, 1, 1)).days - offset
        row = rows.get((feature, k))
        if row is None or r.vendor is None:
            continue
        row.ud_licensees, row.ud_users, row.ud_devices = r.vendor_rule, len(r.vendor.users), len(r.vendor.devices)


def _entitlements(client: Client, db: str,
                  org: str | None) -> dict[tuple[str, str, str], list[tuple[int, dt.date | None, dt.date, str]]]:
    """Counted entitlements by (org, server, feature): (count, start, expiry, SA date)."""
    from lictel.entitlements import Entitlement

    where, params = ("AND org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(f"SELECT org, server, feature, count, start, expiry, version FROM {db}.entitlements FINAL "
                          f"WHERE uncounted = 0 {where}", parameters=params)
    out: dict[tuple[str, str, str], list[tuple[int, dt.date | None, dt.date, str]]] = defaultdict(list)
    for o, s, f, n, start, expiry, version in result.result_rows:
        sa = Entitlement(o, "", 0, f, "", version, 0, False, None, expiry, None, "", "", 0, "", "").sa_date()
        out[(o, s, f)].append((int(n), start, expiry, sa))
    return out

