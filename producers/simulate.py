"""A simulated Citrix estate, realistic enough to look at.

Users live in several time zones, each served by the license server of their region. A working
day starts with a log-in storm around 08:30 local time, dips at lunch (some users log off for
about 45 minutes), and ends around 17:15; weekends are quiet. Features:

- ``XDT_PLT_CCU`` concurrent (most users), pool sized below the peak demand, so it denies
  checkouts on busy mornings; denied users retry a few minutes later;
- ``XDT_ENT_UD`` user/device (the rest);
- ``XDS_PLT_CCS`` concurrent, for a minority, tightly sized.

Each server's CITRIX daemon restarts now and then (a RESTART releases every checkout; users who are
still working check out again a minute or two later). Times have one-second precision, as license
server logs do, so simultaneous events are common. The same arguments and seed give the same
events and the same event ids.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from lictel.events import DENIED, IN, OUT, RESTART, Event
from lictel.timeutil import US, to_us

REGIONS = [
    ("Europe/Berlin", "fra"),
    ("America/New_York", "nyc"),
    ("Asia/Kolkata", "blr"),
    ("Europe/London", "lon"),
    ("America/Chicago", "chi"),
    ("Asia/Singapore", "sin"),
]
VENDOR = "CITRIX"
CCU, UD, CCS = "XDT_PLT_CCU", "XDT_ENT_UD", "XDS_PLT_CCS"
DENY_REASON = "Licensed number of users already reached. (-4,342)"


@dataclass(frozen=True)
class SimSpec:
    """What to simulate. ``start`` is the first UTC day (default: a Monday)."""

    org: str = "acme"
    users: int = 2000
    servers: int = 3
    days: int = 7
    seed: int = 42
    start: dt.date = dt.date(2026, 3, 2)
    restart_rate: float = 0.08  # daemon restarts per server per day


@dataclass
class _User:
    name: str
    server: int
    tz: ZoneInfo
    features: tuple[str, ...]
    hosts: tuple[str, ...]


def _users(spec: SimSpec, rnd: random.Random) -> list[_User]:
    users = []
    for i in range(spec.users):
        server = i % spec.servers
        tz = ZoneInfo(REGIONS[server % len(REGIONS)][0])
        feats: tuple[str, ...] = (CCU,) if rnd.random() < 0.7 else (UD,)
        if rnd.random() < 0.2:
            feats = (*feats, CCS)
        hosts = (f"pc-{i:05d}",) if rnd.random() < 0.9 else (f"pc-{i:05d}", f"lt-{i:05d}")
        users.append(_User(f"user{i:05d}", server, tz, feats, hosts))
    return users


def _capacity(spec: SimSpec, users: list[_User]) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for u in users:
        for f in u.features:
            counts[(u.server, f)] = counts.get((u.server, f), 0) + 1
    factor = {CCU: 0.86, UD: 1.2, CCS: 0.70}
    return {k: max(1, int(n * factor[k[1]])) for k, n in counts.items()}


def _sessions(spec: SimSpec, users: list[_User], rnd: random.Random
              ) -> Iterator[tuple[int, int, int, str]]:
    """(start, end, user index, host) of every working session, UTC µs, in no particular order."""
    for day in range(spec.days):
        date = spec.start + dt.timedelta(days=day)
        weekend = date.weekday() >= 5
        for ui, u in enumerate(users):
            if rnd.random() > (0.07 if weekend else 0.93):
                continue
            base = dt.datetime(date.year, date.month, date.day, tzinfo=u.tz)
            start_min = rnd.gauss(8.5 * 60, 40) if not weekend else rnd.uniform(9 * 60, 15 * 60)
            end_min = rnd.gauss(17.25 * 60, 55) if not weekend else start_min + rnd.uniform(30, 180)
            end_min = max(end_min, start_min + 20)
            host = u.hosts[0] if len(u.hosts) == 1 or rnd.random() < 0.7 else u.hosts[1]
            t0 = to_us(base + dt.timedelta(minutes=start_min)) // US * US
            t1 = to_us(base + dt.timedelta(minutes=end_min)) // US * US
            if not weekend and rnd.random() < 0.4:
                lunch = to_us(base + dt.timedelta(minutes=rnd.gauss(12.25 * 60, 20))) // US * US
                back = lunch + int(rnd.uniform(25, 65) * 60) * US
                if t0 < lunch and back < t1:
                    yield t0, lunch, ui, host
                    yield back, t1, ui, host
                    continue
            yield t0, t1, ui, host


def simulate(spec: SimSpec) -> Iterator[Event]:
    """Every event of the simulated estate, in time order."""
    rnd = random.Random(spec.seed)
    users = _users(spec, rnd)
    cap = _capacity(spec, users)
    names = [f"lic{(i + 1):02d}-{REGIONS[i % len(REGIONS)][1]}" for i in range(spec.servers)]
    # Heap of intents: (ts, order, kind, payload). kind: 0 end, 1 restart, 2 start (ends first).
    heap: list[tuple[int, int, int, tuple[int, str, str, int, int]]] = []
    order = 0
    for t0, t1, ui, host in _sessions(spec, users, rnd):
        for f in users[ui].features:
            order += 1
            heap.append((t0, order, 2, (ui, f, host, t1, 0)))
    day0 = to_us(dt.datetime(spec.start.year, spec.start.month, spec.start.day, tzinfo=dt.UTC))
    for s in range(spec.servers):
        for day in range(spec.days):
            if rnd.random() < spec.restart_rate:
                order += 1
                ts = day0 + day * 86400 * US + rnd.randrange(86400) * US
                heap.append((ts, order, 1, (s, "", "", 0, 0)))
    heapq.heapify(heap)
    in_use: dict[tuple[int, str], int] = {}
    active: dict[tuple[int, str, str], int] = {}  # (user, feature, host) -> session end
    seq = [0] * spec.servers

    def event(ts: int, srv: int, action: str, ui: int, feature: str, host: str,
              reason: str | None = None) -> Event:
        seq[srv] += 1
        name = names[srv]
        user = users[ui].name if ui >= 0 else ""
        return Event(f"{name}:sim:{seq[srv]}", ts, spec.org, name, VENDOR, feature, action, user,
                     host, None, 1, reason, f"{name}:sim", seq[srv])

    while heap:
        ts, _, kind, (a, feature, host, end, tries) = heapq.heappop(heap)
        if kind == 1:  # daemon restart: everything of the server is released
            yield event(ts, a, RESTART, -1, "", "")
            for key in [k for k in active if users[k[0]].server == a]:
                ui, f, h = key
                session_end = active.pop(key)
                in_use[(a, f)] -= 1
                back = ts + rnd.randrange(60, 180) * US
                if back < session_end:
                    order += 1
                    heapq.heappush(heap, (back, order, 2, (ui, f, h, session_end, 0)))
            continue
        ui = a
        srv = users[ui].server
        key = (ui, feature, host)
        if kind == 0:
            if active.get(key) == end:
                del active[key]
                in_use[(srv, feature)] -= 1
                yield event(ts, srv, IN, ui, feature, host)
            continue
        if key in active:
            continue  # already holds it (overlapping sessions on one device share a license)
        pool = (srv, feature)
        if in_use.get(pool, 0) < cap[pool]:
            in_use[pool] = in_use.get(pool, 0) + 1
            active[key] = end
            yield event(ts, srv, OUT, ui, feature, host)
            order += 1
            heapq.heappush(heap, (end, order, 0, (ui, feature, host, end, 0)))
        else:
            yield event(ts, srv, DENIED, ui, feature, host, DENY_REASON)
            retry = ts + rnd.randrange(180, 900) * US
            if tries < 3 and retry < end - 60 * US:
                order += 1
                heapq.heappush(heap, (retry, order, 2, (ui, feature, host, end, tries + 1)))
