"""License-hours and share of the peak per group of users."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel import dupgroup
from lictel.errors import InputError
from lictel.holdings import Checkouts, Identity
from lictel.identity import normalize_user
from lictel.reports.common import Report, Scope, ruled, stored_range
from lictel.timeutil import US, iso_in


def read_groups(path: Path) -> dict[str, str]:
    """``user,group`` CSV (header required) → {normalized user: group}."""
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "user" not in cols or "group" not in cols:
        raise InputError("a group file needs the header user,group", source=str(path), line=1)
    out = {}
    for row in reader:
        user, group = (row.get(cols["user"]) or "").strip(), (row.get(cols["group"]) or "").strip()
        if not user or not group:
            raise InputError("user and group must not be empty", source=str(path), line=reader.line_num)
        out[normalize_user(user)] = group
    return out


def chargeback(client: Client, db: str, scope: Scope, groups: dict[str, str]) -> Report:
    """License-hours and share of the peak per group, in licenses charged. Checkouts are replayed from
    raw events with the engine's rules (OUT/IN/RESTART; an IN closes the oldest open checkouts of
    its identity first) and charged under the DUP_GROUP rule each pool's newest minute row names;
    the peak is the feature's estate peak instant of licenses charged."""
    rng = stored_range(client, db, scope)
    if rng is None:
        return Report("Chargeback", _CB_COLS, [])
    start, end = rng
    where, params = Scope(scope.org, scope.feature).where()
    pool_rules = {(k[0], k[1], k[2]): str(r[1]) for k, r in ruled(
        client, db, f"level = 'pool' AND source = 'license' AND {where}", params, ("org", "server", "feature"),
        extra="argMax(dup_group, minute)").items()}
    result = client.query(
        f"SELECT org, server, vendor, feature, action, user, host, ifNull(handle, ''), count, "
        f"toUnixTimestamp64Micro(ts) FROM {db}.raw_events FINAL WHERE ((action IN ('OUT', 'IN') AND {where}) "
        f"OR action = 'RESTART') AND vendor != 'SESSIONS' AND ts < fromUnixTimestamp64Micro({{end:Int64}}) "
        f"ORDER BY ts, seq", parameters={**params, "end": end})
    cache: dict[str, str] = {}

    def group_of(user: str) -> str:
        g = cache.get(user)
        if g is None:
            g = cache[user] = groups.get(normalize_user(user), "(unmapped)")
        return g

    replay = _ChargeReplay(pool_rules, group_of, start)
    instant = None
    apply, note_peaks, dirty = replay.apply, replay.note_peaks, replay.dirty
    for row in result.result_rows:
        t = row[9]
        if t != instant:
            if instant is not None and dirty:
                note_peaks(instant)  # events at one instant are simultaneous
            instant = t
            if t >= start and not replay.started:
                replay.begin()
        apply(row)
    if instant is not None:
        replay.note_peaks(instant)
    replay.begin()
    replay.settle_all(end)
    total: dict[tuple[str, str], float] = defaultdict(float)
    for (o, f, _), h in replay.hours.items():
        total[(o, f)] += h
    out = []
    best = replay.best
    for o, f, g in sorted(set(replay.hours) | {(o, f, g) for (o, f), (_, _, sh) in best.items() for g in sh}):
        h = replay.hours.get((o, f, g), 0.0)
        top, at, shares = best.get((o, f), (0.0, start, {}))
        held = shares.get(g, 0.0)
        out.append([o, f, g, round(h, 4), round(h / total[(o, f)], 6) if total[(o, f)] else 0.0,
                    _num(held), round(held / top, 6) if top else 0.0, _num(top), iso_in(at, scope.tz),
                    "+".join(sorted({r for (o2, _, f2), r in pool_rules.items() if (o2, f2) == (o, f)})) or "NONE"])
    return Report("Chargeback by group", _CB_COLS, out,
                  [f"from {iso_in(start, scope.tz)} to {iso_in(end, scope.tz)}, in licenses charged under each "
                   "feature's DUP_GROUP rule (dup_group): checkouts of one group share a license; a license shared "
                   "by several users (rules H and SITE) is split equally among them. share_of_peak: the licenses "
                   "each group held at the feature's estate peak instant (the first, if it recurs); users not in "
                   "the group file are (unmapped)."])


def _num(x: float) -> float | int:
    """A share of licenses: an integer when it is one, else rounded."""
    r = round(x, 4)
    return int(r) if r == int(r) else r


_HOUR_US = 3600 * US


class _ChargeReplay:
    """Licenses charged per chargeback group over time (:func:`chargeback`).

    The open checkouts are :class:`lictel.holdings.Checkouts` (the engine's OUT/IN/RESTART rules).
    A DUP group (the rule's projection of an identity) is charged the largest count among its open
    checkouts, attributed to its users in equal shares, and through them to their chargeback
    groups; under rule NONE every checkout is charged, so an identity is charged what it holds.
    Hours accumulate only from ``start``."""

    def __init__(self, rules: dict[tuple[str, str, str], str], group_of: Callable[[str], str], start: int) -> None:
        self.rules = rules
        self.group_of = group_of
        self.start = start
        self.books = Checkouts()
        self.members: dict[tuple[Any, ...], set[Identity]] = {}
        self.contrib: dict[tuple[Any, ...], dict[str, float]] = {}
        self.rate: dict[tuple[str, str, str], float] = defaultdict(float)
        self.since: dict[tuple[str, str, str], int] = {}
        self.hours: dict[tuple[str, str, str], float] = defaultdict(float)
        self.level: dict[tuple[str, str], float] = defaultdict(float)
        # (org, feature) -> chargeback group -> licenses attributed now
        self.now: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.best: dict[tuple[str, str], tuple[float, int, dict[str, float]]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self._fields: dict[tuple[str, str, str], str] = {}
        self._all_alone = not any(dupgroup.fields(r) for r in rules.values())
        self.started = False

    def _by(self, o: str, server: str, f: str) -> str:
        """What the pool's rule groups by (dupgroup.fields; "" for NONE), looked up once per pool."""
        by = self._fields.get((o, server, f))
        if by is None:
            by = self._fields[(o, server, f)] = dupgroup.fields(self.rules.get((o, server, f), dupgroup.NONE))
        return by

    def _key(self, ident: Identity) -> tuple[Any, ...]:
        """The group of a checkout under a grouping rule (rule NONE never gets here)."""
        o, server, vendor, f, user, host, _ = ident
        by = self._by(o, server, f)
        if by == dupgroup.SITE:
            return (o, server, vendor, f)
        return (o, server, vendor, f, user if "U" in by else "", host if "H" in by else "")

    def apply(self, row: Sequence[Any]) -> None:
        o, server, vendor, f, action, user, host, handle, count, t = row
        books = self.books
        if action == "RESTART":
            keys = set()
            for ident, held in books.restart((o, server, vendor)):
                if self._all_alone or self._by(ident[0], ident[1], ident[3]) == "":
                    self._alone(ident, -sum(n for n, _ in held), t)
                else:
                    key = self._key(ident)
                    self.members[key].discard(ident)
                    keys.add(key)
            for key in keys:
                self._recharge(key, t)
            return
        ident = (o, server, vendor, f, user, host, handle)
        delta = books.change(action, ident, int(count), t)
        if not delta:
            return  # an orphan check-in changes nothing
        if self._all_alone or self._by(o, server, f) == "":
            self._alone(ident, delta, t)
            return
        key = self._key(ident)
        if delta > 0:
            self.members.setdefault(key, set()).add(ident)
        elif ident not in books.held:
            self.members[key].discard(ident)
        self._recharge(key, t)

    def _alone(self, ident: Identity, delta: int, t: int) -> None:
        """Rule NONE: the identity's holding changed by ``delta`` licenses, all charged."""
        o, f = ident[0], ident[3]
        g = self.group_of(ident[4])
        k3 = (o, f, g)
        self._settle(k3, t)
        self.rate[k3] += delta
        key = (o, f)
        self.level[key] += delta
        self.now[key][g] += delta
        self.dirty.add(key)

    def _recharge(self, key: tuple[Any, ...], t: int) -> None:
        members = self.members.get(key, set())
        new: dict[str, float] = {}
        if members:
            held = self.books.held
            value = float(max(n for i in members for n, _ in held[i]))  # the group's largest open checkout
            users = {i[4] for i in members}
            for u in users:
                g = self.group_of(u)
                new[g] = new.get(g, 0.0) + value / len(users)
        old = self.contrib.get(key, {})
        if new == old:
            return
        o, f = key[0], key[3]
        for g in old.keys() | new.keys():
            diff = new.get(g, 0.0) - old.get(g, 0.0)
            if diff:
                k3 = (o, f, g)
                self._settle(k3, t)
                self.rate[k3] += diff
                self.level[(o, f)] += diff
                self.now[(o, f)][g] += diff
        if new:
            self.contrib[key] = new
        else:
            self.contrib.pop(key, None)
        self.dirty.add((o, f))

    def _settle(self, k3: tuple[str, str, str], t: int) -> None:
        """The hours ``k3`` accumulated at its rate since it last changed, counted from ``start``."""
        start = self.start
        last = self.since.get(k3, start)
        if t > last:
            self.hours[k3] += self.rate[k3] * (t - (last if last > start else start)) / _HOUR_US
        self.since[k3] = t if t > start else start

    def begin(self) -> None:
        """At the first instant of the range: what is held then counts as a candidate peak."""
        if not self.started:
            self.started = True
            self.dirty.update(k for k, v in self.level.items() if v > 1e-9)
            self.note_peaks(self.start, force=True)

    def note_peaks(self, instant: int, force: bool = False) -> None:
        if not self.started and not force:
            self.dirty.clear()
            return
        best, level = self.best, self.level
        for key in self.dirty:
            lv = level[key]
            top = best.get(key)
            if lv > (top[0] if top else 0.0) + 1e-9:
                shares = {g: r for g, r in self.now[key].items() if r > 1e-9}
                self.best[key] = (lv, max(instant, self.start), shares)
        self.dirty.clear()

    def settle_all(self, end: int) -> None:
        for k3 in list(self.rate):
            self._settle(k3, end)


_CB_COLS = ["org", "feature", "group", "license_hours", "share_of_hours", "held_at_peak", "share_of_peak", "peak",
            "peak_at", "dup_group"]


