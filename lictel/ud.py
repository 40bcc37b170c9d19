"""User/device licensing over rolling 90-day windows (issue 5).

A feature's license model comes from its name: ``_UD`` is user/device, ``_CCU``/``_CCS`` (and any
other) concurrent; ``LICTEL_LICENSE_MODELS`` overrides it per feature. A *use* is a checkout (OUT)
by a user from a device; user names compare case-insensitively without their domain
(:mod:`lictel.identity`). A license is assigned on use and stays assigned 90 days after the last
use, so the licenses needed on day D are decided by the (user, device) pairs of the 90 days ending
D (D and the 89 before it). For each such window:

``users_90d``
    distinct users.
``vendor_rule``
    the vendor's optimisation: a device used by two or more users, each of whom used no other
    device (an *exclusively shared* device), takes one device license and its users none; every
    other user takes a user license.
``optimal``
    the fewest licenses (user or device) that cover every pair: a minimum vertex cover of the
    bipartite user–device graph, whose size equals a maximum matching (König). The matching is
    Hopcroft–Karp (``scipy.sparse.csgraph.maximum_bipartite_matching``); the cover itself is read
    off the matching by the alternating-path construction of König's proof.

``optimal <= vendor_rule <= users_90d`` always: the vendor's assignment is itself a cover.

The daily pair sets come from ClickHouse (``ud_daily``, exact ``groupUniqArray`` states filled by a
materialized view from raw events); the window slides one day at a time over integer pair ids, so a
year of days costs a few array passes per day, not a rescan.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from lictel.errors import ConfigError

WINDOW_DAYS = 90
UD, CONCURRENT = "ud", "concurrent"


def parse_models(text: str) -> dict[str, str]:
    """``"XDT_PLT_UD=concurrent,MY_APP=ud"`` → ``{feature: model}``; bad text is a ConfigError."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        feature, sep, model = item.partition("=")
        model = model.strip().lower()
        if not sep or not feature.strip() or model not in (UD, CONCURRENT):
            raise ConfigError(f"LICTEL_LICENSE_MODELS: {item!r} is not FEATURE=ud or FEATURE=concurrent")
        out[feature.strip()] = model
    return out


def license_model(feature: str, overrides: dict[str, str] | None = None) -> str:
    """``ud`` or ``concurrent``: the override if configured, else from the name's suffix."""
    if overrides and feature in overrides:
        return overrides[feature]
    return UD if feature.upper().endswith("_UD") else CONCURRENT


@dataclass(frozen=True)
class Assignment:
    """Who holds licenses under one rule, for one window."""

    users: list[str]
    devices: list[str]


@dataclass(frozen=True)
class UDRow:
    org: str
    feature: str
    day: dt.date
    users_90d: int
    vendor_rule: int
    optimal: int
    # With explain: the evidence.
    vendor: Assignment | None = None
    cover: Assignment | None = None
    shared_devices: list[str] = field(default_factory=list)


def daily_pairs(client: Client, db: str, features: list[tuple[str, str]], first: dt.date | None = None,
                last: dt.date | None = None) -> dict[tuple[str, str], list[tuple[dt.date, list[tuple[str, str]]]]]:
    """Per (org, feature): [(day, [(user, device), ...]), ...] in day order, from ``ud_daily``."""
    where = ["(org, feature) IN {keys:Array(Tuple(String, String))}"]
    params: dict[str, Any] = {"keys": features}
    if first is not None:
        where.append("day >= {first:Date}")
        params["first"] = first
    if last is not None:
        where.append("day <= {last:Date}")
        params["last"] = last
    result = client.query(
        f"SELECT org, feature, day, groupUniqArrayMerge(pairs) FROM {db}.ud_daily WHERE {' AND '.join(where)} "
        f"GROUP BY org, feature, day ORDER BY org, feature, day", parameters=params)
    out: dict[tuple[str, str], list[tuple[dt.date, list[tuple[str, str]]]]] = {}
    for org, feature, day, pairs in result.result_rows:
        out.setdefault((org, feature), []).append((day, [tuple(p) for p in pairs]))
    return out


def ud_features(client: Client, db: str, models: dict[str, str], org: str | None = None,
                feature: str | None = None) -> list[tuple[str, str]]:
    """(org, feature) keys with uses whose license model is user/device."""
    result = client.query(f"SELECT DISTINCT org, feature FROM {db}.ud_daily ORDER BY org, feature")
    return [(o, f) for o, f in result.result_rows
            if license_model(f, models) == UD and (org is None or o == org) and (feature is None or f == feature)]


def ud_report(client: Client, db: str, models: dict[str, str], org: str | None = None, feature: str | None = None,
              day: dt.date | None = None, explain: bool = False, after_last_use: bool = False) -> list[UDRow]:
    """One row per org, user/device feature and day from its first to its last day with a use
    (only ``day`` when given; with ``after_last_use`` also a ``day`` after the last use, whose
    assignments may still be held), sorted."""
    keys = ud_features(client, db, models, org, feature)
    if not keys:
        return []
    if day is not None:
        bounds = client.query(
            f"SELECT org, feature FROM {db}.ud_daily WHERE (org, feature) IN {{keys:Array(Tuple(String, String))}} "
            f"GROUP BY org, feature HAVING min(day) <= {{day:Date}} AND (max(day) >= {{day:Date}} OR {{after:Bool}})",
            parameters={"keys": keys, "day": day, "after": after_last_use}).result_rows
        keys = sorted((o, f) for o, f in bounds)
        if not keys:
            return []
    first = day - dt.timedelta(days=WINDOW_DAYS - 1) if day else None
    data = daily_pairs(client, db, keys, first, day)
    rows: list[UDRow] = []
    for (o, f), days in sorted(data.items()):
        if day is not None:
            rows.extend(r for r in windows(o, f, days, explain=explain, until=day) if r.day == day)
        else:
            rows.extend(windows(o, f, days, explain=explain))
    if day is not None:  # uses on both sides of the day, none in its 90 days: a row of zeros
        rows.extend(UDRow(o, f, day, 0, 0, 0, *((Assignment([], []),) * 2 if explain else ()))
                    for o, f in keys if (o, f) not in data)
        rows.sort(key=lambda r: (r.org, r.feature))
    return rows


def windows(org: str, feature: str, days: list[tuple[dt.date, list[tuple[str, str]]]],
            explain: bool = False, until: dt.date | None = None) -> Iterator[UDRow]:
    """Slide the 90-day window over ``days`` (day order, uses per day); one row per calendar day from
    the first day to the last (or to ``until``)."""
    if not days:
        return
    users: dict[str, int] = {}
    devices: dict[str, int] = {}
    pair_ids: dict[tuple[int, int], int] = {}
    pu: list[int] = []
    pd: list[int] = []
    by_day: dict[dt.date, np.ndarray] = {}
    for d, pairs in days:
        ids = []
        for u, v in pairs:
            key = (users.setdefault(u, len(users)), devices.setdefault(v, len(devices)))
            pid = pair_ids.get(key)
            if pid is None:
                pid = pair_ids[key] = len(pu)
                pu.append(key[0])
                pd.append(key[1])
            ids.append(pid)
        by_day[d] = np.asarray(ids, dtype=np.int64)
    pair_user = np.asarray(pu, dtype=np.int64)
    pair_dev = np.asarray(pd, dtype=np.int64)
    n_users, n_devs = len(users), len(devices)
    user_names = list(users)
    dev_names = list(devices)
    counts = np.zeros(len(pu), dtype=np.int32)
    window: deque[dt.date] = deque()
    day = days[0][0]
    last = until or days[-1][0]
    while day <= last:
        today = by_day.get(day)
        if today is not None:
            counts[today] += 1
            window.append(day)
        while window and (day - window[0]).days >= WINDOW_DAYS:
            counts[by_day[window.popleft()]] -= 1
        active = np.flatnonzero(counts)
        yield _window_row(org, feature, day, pair_user[active], pair_dev[active], n_users, n_devs,
                          user_names, dev_names, explain)
        day += dt.timedelta(days=1)


def _window_row(org: str, feature: str, day: dt.date, u: np.ndarray, d: np.ndarray, n_users: int, n_devs: int,
                user_names: list[str], dev_names: list[str], explain: bool) -> UDRow:
    if u.size == 0:
        return UDRow(org, feature, day, 0, 0, 0, Assignment([], []) if explain else None,
                     Assignment([], []) if explain else None)
    devs_per_user = np.bincount(u, minlength=n_users)
    users_per_dev = np.bincount(d, minlength=n_devs)
    n_active_users = int(np.count_nonzero(devs_per_user))
    # Exclusively shared: >= 2 users, none of whom used another device.
    roaming = devs_per_user[u] > 1
    dev_has_roamer = np.bincount(d, weights=roaming, minlength=n_devs) > 0
    shared = (users_per_dev >= 2) & ~dev_has_roamer
    on_shared = shared[d]  # pairs whose (single-device) user sits on a shared device
    vendor = int(np.count_nonzero(shared)) + n_active_users - int(np.count_nonzero(on_shared))
    graph = csr_matrix((np.ones(u.size, dtype=np.int8), (u, d)), shape=(n_users, n_devs))
    match = maximum_bipartite_matching(graph, perm_type="column")  # user -> device or -1
    optimal = int(np.count_nonzero(match >= 0))
    if not explain:
        return UDRow(org, feature, day, n_active_users, vendor, optimal)
    vendor_users = sorted({user_names[i] for i in u[~on_shared]})
    vendor_devs = sorted(dev_names[i] for i in np.flatnonzero(shared))
    cover_users, cover_devs = _konig_cover(u, d, match, n_devs)
    cover = Assignment(sorted(user_names[i] for i in cover_users), sorted(dev_names[i] for i in cover_devs))
    if len(cover.users) + len(cover.devices) != optimal:  # pragma: no cover - König's theorem
        raise AssertionError("vertex cover and maximum matching differ in size")
    return UDRow(org, feature, day, n_active_users, vendor, optimal, Assignment(vendor_users, vendor_devs),
                 cover, vendor_devs)


def _konig_cover(u: np.ndarray, d: np.ndarray, match: np.ndarray, n_devs: int) -> tuple[list[int], list[int]]:
    """Minimum vertex cover from a maximum matching: Z = everything reachable from an unmatched user
    by alternating paths; the cover is the users outside Z and the devices inside it."""
    adj: dict[int, list[int]] = {}
    for a, b in zip(u.tolist(), d.tolist(), strict=True):
        adj.setdefault(a, []).append(b)
    dev_match = np.full(n_devs, -1, dtype=np.int64)
    for user in adj:
        if match[user] >= 0:
            dev_match[match[user]] = user
    seen_users = {x for x in adj if match[x] < 0}
    seen_devs: set[int] = set()
    queue = deque(seen_users)
    while queue:
        x = queue.popleft()
        for y in adj[x]:
            if y in seen_devs or match[x] == y:
                continue
            seen_devs.add(y)
            partner = int(dev_match[y])
            if partner >= 0 and partner not in seen_users:
                seen_users.add(partner)
                queue.append(partner)
    return [x for x in adj if x not in seen_users], sorted(seen_devs)
