"""The concurrency engine: ordered license events in, exact minute rows out (DESIGN.md).

Pure: no Faust, Kafka, ClickHouse or I/O. The Faust agents (``streams/``), the batch recompute
and the tests all drive the same :class:`Engine`.

Invariants
----------
- Time is integer microseconds (UTC). A minute is ``[t0, t0 + 60 s)``.
- Events of a server are applied in ``(ts, seq)`` order; events at one instant are simultaneous,
  so only the state after all of them counts. Duplicates (same ``event_id``) apply once.
- A server's watermark is ``max(ts seen, last HEARTBEAT) - lateness``; minutes that end at or
  before it are *final* and emitted exactly once per engine state. Events older than the final
  boundary are *late*: returned for the late topic, applied to ``held`` from now on.
- Every event that reached final state is remembered by ``(source, seq)`` (as intervals, so it
  costs next to nothing): a replay of it, however old, is a duplicate, never a late event.
- An estate minute ``(org, feature)`` is final once every non-idle server serving the feature is
  final past it; its curve is the sum of the servers' curves (peak of the sum, not sum of peaks).
- Session events (vendor ``SESSIONS``, DESIGN.md "SessionEvent") form their own series: a pool of
  ``(org, site, feature)`` counts the distinct *units* (client devices, or users) that hold at least
  one session, under :class:`SessionRule`. Each session is a small state machine, so a session
  event seen twice (overlapping exports) changes nothing. Their rows carry ``source = "sessions"``
  and their estate sums only session pools.
- No event moves a server's clock by more than ``max_gap_us`` (default 366 days, as the producers'
  source check): an event that far from the newest time of its server (or, for a server not seen
  yet, from the median time of its events in the same call) is *refused* (returned in
  ``Output.refused``, applied to nothing), so one damaged date written by a producer other than
  lictel's cannot make the engine carry held licenses across years of minutes. Heartbeats that far
  off are dropped and counted.
- The whole state round-trips through :meth:`Engine.to_state` / :meth:`Engine.from_state` (plain
  JSON types) so that a stream worker can keep it in a changelog-backed table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from lictel import dupgroup
from lictel.dupgroup import DupRules, GroupKey
from lictel.events import (
    DENIED,
    DEQUEUED,
    DISCONNECT,
    HEARTBEAT,
    IN,
    LICENSE_SOURCE,
    LOGOFF,
    LOGON,
    OUT,
    QUEUED,
    RECONNECT,
    RECORDED_ONLY,
    RESTART,
    SESSION_VENDOR,
    SESSIONS_SOURCE,
    Event,
)
from lictel.identity import normalize_device, normalize_user
from lictel.limits import MAX_GAP_US
from lictel.seqset import SeqSet
from lictel.timeutil import DAY_US, MINUTE_US, floor_minute, iso_s

POOL = "pool"
ESTATE = "estate"
#: The ``dup_group`` of an estate minute whose servers charged the feature under different rules.
MIXED = "MIXED"
_SEP = "\x1f"
#: A pool that holds nothing is dropped from the state after this much quiet event time.
EVICT_AFTER_US = 3600 * 1_000_000
# Entity kinds of take_changes(): each name is the kind's letter + its key.
_SERVER, _POOL, _ESTATE, _SOURCE = "s", "p", "e", "q"


class MinuteRow(NamedTuple):
    """One key's metrics for one minute. ``server`` is empty at estate level."""

    level: str
    org: str
    server: str
    feature: str
    minute: int
    peak: int
    low: int
    license_us: int
    checkouts: int
    checkins: int
    forced_releases: int
    denials: int
    queued: int
    orphans: int
    charged_peak: int
    charged_low: int
    charged_license_us: int
    dup_group: str = dupgroup.NONE
    source: str = LICENSE_SOURCE

    @property
    def license_seconds(self) -> float:
        return self.license_us / 1_000_000

    @property
    def avg(self) -> float:
        return self.license_us / MINUTE_US


# A step curve inside one minute: (offset from t0 in µs, checkouts and licenses charged from there
# on), offsets rising.
Steps = list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class SessionRule:
    """How sessions imply concurrent licenses (configuration; DESIGN.md "SessionEvent").

    ``unit``: ``device`` (one license per distinct client device with a session) or ``user``.
    ``disconnected_holds``: whether a disconnected session keeps its license until it ends.
    """

    unit: str = "device"
    disconnected_holds: bool = True

    def __post_init__(self) -> None:
        if self.unit not in ("device", "user"):
            raise ValueError(f"session unit must be 'device' or 'user', not {self.unit!r}")

    def unit_of(self, ev: Event) -> str:
        if self.unit == "user":
            return normalize_user(ev.user) or f"session:{ev.handle}"
        # A session whose client device is unknown counts as a device of its own.
        return normalize_device(ev.host) or f"session:{ev.handle}"


@dataclass(slots=True)
class _Pool:
    org: str
    server: str
    feature: str
    final_upto: int
    held: dict[str, int] = field(default_factory=dict)
    c: int = 0
    pending: list[Event] = field(default_factory=list)
    pending_ids: set[str] = field(default_factory=set)
    source: str = LICENSE_SOURCE
    # Session pools only: session key -> [unit, holding (0/1)]; unit -> sessions holding it.
    sessions: dict[str, list[Any]] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    # Licenses charged (DUP_GROUP). ``parts``: the open checkouts, oldest first, of identities whose
    # open checkouts are not all of count 1 (the others are ``held`` checkouts of 1). Derived, not
    # saved: ``grouped`` (group key -> {count: open checkouts with that count}) and ``charged``.
    parts: dict[str, list[int]] = field(default_factory=dict)
    rule: str = dupgroup.NONE
    group_of: GroupKey | None = None
    by_identity: bool = False  # the group of a checkout without a handle is its identity (dupgroup)
    groups: dict[str, dict[int, int]] = field(default_factory=dict)
    charged: int = 0
    last_ts: int = 0  # the newest event time applied or pending (eviction waits for quiet)

    def set_rule(self, rule: str) -> None:
        """Charge under ``rule`` from now on (rebuilds the groups from the open checkouts)."""
        self.rule = rule
        self.group_of = dupgroup.group_key(rule) if self.source == LICENSE_SOURCE else None
        self.by_identity = self.group_of is not None and dupgroup.by_identity(rule)
        self.groups = {}
        self.charged = 0
        if self.group_of is None:
            return
        for ident, n in self.held.items():
            vendor, user, host, _ = ident.split(_SEP)
            group = self.groups.setdefault(self.group_of(vendor, user, host), {})
            for k in self.parts.get(ident) or [1] * n:
                group[k] = group.get(k, 0) + 1
        self.charged = sum(max(g) for g in self.groups.values())

    @property
    def charged_now(self) -> int:
        return self.c if self.group_of is None else self.charged


@dataclass(slots=True)
class _Server:
    org: str
    server: str
    source: str = LICENSE_SOURCE
    max_ts: int | None = None
    last_hb: int | None = None
    boundary: int | None = None  # every minute before it is final
    last_seen_wall: int = 0
    restarts: list[Event] = field(default_factory=list)
    restart_ids: set[str] = field(default_factory=set)
    pools: set[str] = field(default_factory=set)  # features


@dataclass(slots=True)
class _Estate:
    org: str
    feature: str
    final_upto: int | None = None
    source: str = LICENSE_SOURCE
    servers: set[str] = field(default_factory=set)
    # minute -> list of (counters of the pool row, steps)
    buf: dict[int, list[tuple[MinuteRow, Steps]]] = field(default_factory=dict)


@dataclass(slots=True)
class Output:
    """What one call to :meth:`Engine.process` produced."""

    rows: list[MinuteRow] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    duplicates: int = 0
    estate_late_rows: int = 0
    refused: list[tuple[Event, str]] = field(default_factory=list)  # (event, why): far from its server's clock
    refused_heartbeats: int = 0


class Engine:
    """Event-time concurrency state for any set of servers and features.

    ``lateness_us``: how far behind the newest event of a server an event may arrive and still be
    on time. ``idle_timeout_us``: a server silent (by the caller's wall clock) for longer no longer
    holds back estate minutes.
    """

    def __init__(self, lateness_us: int = 60_000_000, idle_timeout_us: int = 300_000_000,
                 sessions: SessionRule | None = None, rules: DupRules | None = None,
                 max_gap_us: int = MAX_GAP_US, evict_after_us: int = EVICT_AFTER_US) -> None:
        self.max_gap_us = max_gap_us
        self.sessions = sessions or SessionRule()
        self.rules = rules or DupRules()
        self.lateness_us = lateness_us
        self.idle_timeout_us = idle_timeout_us
        self._servers: dict[str, _Server] = {}
        self._pools: dict[str, _Pool] = {}
        self._estates: dict[str, _Estate] = {}
        self._applied: dict[str, SeqSet] = {}  # source -> seqs applied to final state
        # What changed since take_changes(): keys per entity kind (a name, kind + key, is built only
        # there, never on the hot path), and the names of pools evicted.
        self._dirty: dict[str, set[str]] = {_SERVER: set(), _POOL: set(), _ESTATE: set(), _SOURCE: set()}
        self._dirty_pools = self._dirty[_POOL]
        self._dirty_sources = self._dirty[_SOURCE]
        self._evicted: set[str] = set()
        self.evict_after_us = evict_after_us
        self.late_events = 0
        self.duplicate_events = 0

    # ------------------------------------------------------------------ intake

    def process(self, events: Iterable[Event], now_wall_us: int = 0, prev: dict[str, int] | None = None) -> Output:
        """Take events in any order; return the rows of every minute that became final.

        ``prev``: the batch's map of source -> the seq its producer last sent to this partition
        (schemas/LicenseEventBatch.avsc): the seqs between belong to other partitions, and count as
        seen, so the applied set of a source spread over partitions stays one interval."""
        out = Output()
        touched: set[str] = set()
        servers = self._servers
        events = events if isinstance(events, list) else list(events)
        if prev:
            self._fill(events, prev)
        gap = self.max_gap_us
        medians: dict[str, int] = {}  # servers without a clock yet: the reference of this call
        pools = self._pools
        dirty_pools = self._dirty_pools
        for ev in events:
            # One unpacking instead of an attribute lookup per use: this loop runs once per event.
            event_id, ts, org, server, vendor, feature, action, _, _, _, _, _, _, _ = ev
            if vendor == SESSION_VENDOR:
                source = SESSIONS_SOURCE
                skey = _skey(org, server, source)
            else:
                source = LICENSE_SOURCE
                skey = org + _SEP + server
            srv = servers.get(skey)
            if srv is None:
                srv = servers[skey] = _Server(org, server, source)
            max_ts = srv.max_ts
            ref = max_ts if max_ts is not None else srv.last_hb
            if ref is None:
                ref = medians.get(skey)
                if ref is None:
                    ref = medians[skey] = _median_ts(events, org, server, vendor == SESSION_VENDOR)
            if ts - ref > gap or ref - ts > gap:
                if action == HEARTBEAT:
                    out.refused_heartbeats += 1
                else:
                    out.refused.append((ev, _far(ev, ref, gap)))
                continue
            touched.add(skey)
            if action == HEARTBEAT:
                if srv.last_hb is None or ts > srv.last_hb:
                    srv.last_hb = ts
                continue
            if max_ts is None or ts > max_ts:
                srv.max_ts = ts
            if action in RECORDED_ONLY:
                self._mark(ev)  # changes nothing: seen at once, so it leaves no hole in the applied set
                continue  # recorded downstream: checkouts survive a reread; an unsupported feature has no pool
            boundary = srv.boundary
            late = boundary is not None and ts < boundary
            if late and self._seen(ev):
                out.duplicates += 1  # a replay of an event already in final state
                continue
            if action == RESTART:
                if event_id in srv.restart_ids:
                    out.duplicates += 1
                    continue
                if late:
                    self._late(out, ev)
                    for feat in srv.pools:
                        self._apply_restart(pools[skey + _SEP + feat], ev)
                        dirty_pools.add(skey + _SEP + feat)
                    continue
                srv.restarts.append(ev)
                srv.restart_ids.add(event_id)
                continue
            pkey = skey + _SEP + feature
            pool = pools.get(pkey)
            if pool is None:
                start = floor_minute(ts)
                if boundary is not None:
                    start = max(start, boundary)
                pool = pools[pkey] = _Pool(org, server, feature, start, source=srv.source)
                if srv.source == LICENSE_SOURCE:
                    pool.set_rule(self.rules.rule(org, feature))
                srv.pools.add(feature)
                ekey = _ekey(org, feature, srv.source)
                est = self._estates.get(ekey)
                if est is None:
                    est = self._estates[ekey] = _Estate(org, feature, source=srv.source)
                if server not in est.servers:
                    est.servers.add(server)
                    self._dirty[_ESTATE].add(ekey)
            pending_ids = pool.pending_ids
            if event_id in pending_ids:
                out.duplicates += 1
                continue
            dirty_pools.add(pkey)
            if ts > pool.last_ts:
                pool.last_ts = ts
            if late:
                self._late(out, ev)
                self._apply(pool, ev, _Counters(), self.sessions)
                continue
            if ts < pool.final_upto:
                # Nothing of this pool is final yet before its first event: start earlier.
                pool.final_upto = floor_minute(ts)
            pool.pending.append(ev)
            pending_ids.add(event_id)
        self.duplicate_events += out.duplicates
        for skey in touched:
            self._dirty[_SERVER].add(skey)
            srv = servers[skey]
            if now_wall_us > srv.last_seen_wall:
                srv.last_seen_wall = now_wall_us
            marks = [t for t in (srv.max_ts, srv.last_hb) if t is not None]
            if not marks:
                continue
            mark = max(marks)
            boundary = floor_minute(mark - self.lateness_us)
            if srv.boundary is None or boundary > srv.boundary:
                self._finalize_server(srv, boundary, out)
        self._finalize_estates(now_wall_us, out)
        return out

    def flush(self, until_us: int, now_wall_us: int = 0) -> Output:
        """Finalize every server up to ``until_us`` (a minute boundary): the end of a batch input."""
        out = Output()
        for skey, srv in self._servers.items():
            if srv.boundary is None or until_us > srv.boundary:
                self._dirty[_SERVER].add(skey)
                self._finalize_server(srv, floor_minute(until_us), out)
        self._finalize_estates(now_wall_us, out, ignore_idle=True)
        return out

    def final_upto(self, now_wall_us: int = 0) -> int | None:
        """Everything before this instant is final for every non-idle server this engine knows."""
        active = [s.boundary for s in self._servers.values()
                  if s.boundary is not None and not self._idle(s, now_wall_us)]
        if active:
            return min(active)
        known = [s.boundary for s in self._servers.values() if s.boundary is not None]
        return max(known) if known else None

    # ------------------------------------------------------------------ state changes

    def _late(self, out: Output, ev: Event) -> None:
        out.late.append(ev)
        self.late_events += 1
        self._mark(ev)

    def _fill(self, events: list[Event], prev: dict[str, int]) -> None:
        """Count as seen the seqs between a source's events here that its producer sent elsewhere."""
        last = dict(prev)
        gaps: dict[str, list[tuple[int, int]]] = {}
        for ev in events:
            source = ev.source
            p = last.get(source)
            if p is None:
                continue
            seq = ev.seq
            if ev.action == HEARTBEAT or seq <= p:  # heartbeats are never marked; out of order: stop
                del last[source]
                continue
            if seq > p + 1:
                runs = gaps.get(source)
                if runs is None:
                    gaps[source] = [(p + 1, seq - 1)]
                else:
                    runs.append((p + 1, seq - 1))
            last[source] = seq
        for source, runs in gaps.items():
            applied = self._applied.get(source)
            if applied is None:
                applied = self._applied[source] = SeqSet()
            applied.add_ranges(runs)
            self._dirty_sources.add(source)

    def _seen(self, ev: Event) -> bool:
        applied = self._applied.get(ev.source)
        return applied is not None and ev.seq in applied

    def _mark_all(self, events: list[Event]) -> None:
        """:meth:`_mark` each of ``events``, a source's seqs added as runs."""
        by_source: dict[str, list[int]] = {}
        for ev in events:
            seqs = by_source.get(ev.source)
            if seqs is None:
                by_source[ev.source] = [ev.seq]
            else:
                seqs.append(ev.seq)
        for source, seqs in by_source.items():
            applied = self._applied.get(source)
            if applied is None:
                applied = self._applied[source] = SeqSet()
            applied.add_many(seqs)
            self._dirty_sources.add(source)

    def _mark(self, ev: Event) -> None:
        applied = self._applied.get(ev.source)
        if applied is None:
            applied = self._applied[ev.source] = SeqSet()
        applied.add(ev.seq)
        self._dirty_sources.add(ev.source)

    @staticmethod
    def _apply_restart(pool: _Pool, ev: Event) -> int:
        prefix = ev.vendor + _SEP
        released = 0
        for ident in [k for k in pool.held if k.startswith(prefix)]:
            released += pool.held.pop(ident)
            pool.parts.pop(ident, None)
        pool.c -= released
        if released and pool.group_of is not None:
            pool.set_rule(pool.rule)
        return released

    @staticmethod
    def _apply(pool: _Pool, ev: Event, cnt: _Counters, rule: SessionRule) -> bool:
        """Apply one event; return whether it is an event of the pool key (for row existence)."""
        action = ev.action
        if pool.source == SESSIONS_SOURCE:
            _apply_session(pool, ev, cnt, rule)
            return True
        if action == OUT:
            ident = _SEP.join((ev.vendor, ev.user, ev.host, ev.handle or ""))
            k = ev.count
            have = pool.held.get(ident, 0)
            pool.held[ident] = have + k
            pool.c += k
            cnt.checkouts += k
            parts = pool.parts.get(ident)
            if parts is not None:
                parts.append(k)
            elif k != 1:
                pool.parts[ident] = [1] * have + [k]
            group_of = pool.group_of
            if group_of is not None:
                gkey = ident if pool.by_identity and not ev.handle else group_of(ev.vendor, ev.user, ev.host)
                group = pool.groups.get(gkey)
                if group is None:
                    pool.groups[gkey] = {k: 1}
                    pool.charged += k
                elif k == 1:  # the common case: a group holding something is charged 1 at least
                    group[1] = group.get(1, 0) + 1
                else:
                    _charge_out(pool, gkey, k)
        elif action == IN:
            ident = _SEP.join((ev.vendor, ev.user, ev.host, ev.handle or ""))
            have = pool.held.get(ident, 0)
            if have <= 0:
                cnt.orphans += 1
            else:
                released = min(ev.count, have)
                if have == released:
                    del pool.held[ident]
                else:
                    pool.held[ident] = have - released
                pool.c -= released
                cnt.checkins += released
                group_of = pool.group_of
                if group_of is not None:
                    gkey = ident if pool.by_identity and not ev.handle else group_of(ev.vendor, ev.user, ev.host)
                    group = pool.groups[gkey]
                    if len(group) == 1 and ident not in pool.parts:
                        # The common case: only checkouts of 1 in the group (charged 1 while any is open).
                        left = group[1] - released
                        if left:
                            group[1] = left
                        else:
                            del pool.groups[gkey]
                            pool.charged -= 1
                    else:
                        _charge_in(pool, ident, gkey, released)
                elif ident in pool.parts:
                    parts = pool.parts[ident]
                    _close_oldest(parts, released, None)
                    if not parts:
                        del pool.parts[ident]
        elif action == DENIED:
            cnt.denials += 1
        elif action == QUEUED:
            cnt.queued += 1
        elif action == RESTART:
            released = Engine._apply_restart(pool, ev)
            cnt.forced += released
            return released > 0
        elif action != DEQUEUED:  # pragma: no cover - validated at intake
            raise ValueError(f"unknown action {action!r}")
        return True

    def _finalize_server(self, srv: _Server, boundary: int, out: Output) -> None:
        skey = _skey(srv.org, srv.server, srv.source)
        restarts = sorted((r for r in srv.restarts if r.ts < boundary), key=_order)
        for feature in sorted(srv.pools):
            pool = self._pools[skey + _SEP + feature]
            if pool.final_upto >= boundary:
                continue
            due = [e for e in pool.pending if e.ts < boundary]
            if due:
                if len(due) == len(pool.pending):  # the common case: everything waiting is due
                    pool.pending = []
                    pool.pending_ids = set()
                else:  # an id is pending at most once (intake drops a second), so removing is exact
                    pool.pending = [e for e in pool.pending if e.ts >= boundary]
                    pool.pending_ids.difference_update([e.event_id for e in due])
                self._mark_all(due)
            evs = sorted([*due, *(r for r in restarts if r.ts >= pool.final_upto)], key=_order)
            pkey = skey + _SEP + feature
            if evs:
                self._dirty_pools.add(pkey)
            ekey = _ekey(srv.org, feature, srv.source)
            est = self._estates[ekey]
            for row, steps in _pool_minutes(pool, evs, boundary, self.sessions):
                out.rows.append(row)
                if est.final_upto is not None and row.minute < est.final_upto:
                    out.estate_late_rows += 1
                else:
                    est.buf.setdefault(row.minute, []).append((row, steps))
                    self._dirty[_ESTATE].add(ekey)
            # A pool's final_upto is saved only with its other state: once final it equals the
            # server's boundary, and from_state takes the larger of the two.
            pool.final_upto = boundary
            if (pool.c == 0 and not pool.pending and not pool.sessions and not pool.parts
                    and pool.last_ts + self.evict_after_us <= boundary):
                # Holds nothing, waits for nothing, quiet for a while: a pool made anew by its next
                # event gives the same rows, so it need not be kept (nor saved).
                del self._pools[pkey]
                srv.pools.discard(feature)
                self._dirty_pools.discard(pkey)
                self._evicted.add(_POOL + pkey)
        if restarts:
            self._mark_all(restarts)
            srv.restarts = [r for r in srv.restarts if r.ts >= boundary]
            srv.restart_ids = {r.event_id for r in srv.restarts}
        srv.boundary = boundary

    def _idle(self, srv: _Server, now_wall_us: int) -> bool:
        return now_wall_us - srv.last_seen_wall > self.idle_timeout_us

    def _finalize_estates(self, now_wall_us: int, out: Output, ignore_idle: bool = False) -> None:
        for est in self._estates.values():
            servers = [self._servers[_skey(est.org, s, est.source)] for s in est.servers]
            active = [s for s in servers if ignore_idle or not self._idle(s, now_wall_us)] or servers
            bounds = [s.boundary for s in active]
            if any(b is None for b in bounds):
                continue
            boundary = min(b for b in bounds if b is not None)
            if est.final_upto is not None and boundary <= est.final_upto:
                continue
            for minute in sorted(m for m in est.buf if m < boundary):
                out.rows.append(_estate_row(est, minute, est.buf.pop(minute)))
            est.final_upto = boundary
            self._dirty[_ESTATE].add(_ekey(est.org, est.feature, est.source))

    # ------------------------------------------------------------------ persistence

    def take_changes(self, everything: bool = False) -> tuple[dict[str, Any], set[str]]:
        """The entities (servers, pools, estates, applied-seq sets; plain JSON each, named) that
        changed since the last call (with ``everything``: all of them), and the names of pools
        evicted since; then forget both. With :meth:`meta` and :meth:`from_entities` a caller saves
        only what changed."""
        changed = (self.entities() if everything else
                   {name: value for kind, keys in self._dirty.items() for key in keys
                    if (value := self._entity(name := kind + key)) is not None})
        evicted = self._evicted - changed.keys()
        for keys in self._dirty.values():
            keys.clear()
        self._evicted = set()
        return changed, evicted

    def meta(self) -> dict[str, Any]:
        """What is not in any entity: the counters."""
        return {"late": self.late_events, "dup": self.duplicate_events}

    def entities(self) -> dict[str, Any]:
        """Every entity, named as :meth:`take_changes` names them."""
        names = [*(_SERVER + k for k in self._servers), *(_POOL + k for k in self._pools),
                 *(_ESTATE + k for k in self._estates), *(_SOURCE + k for k in self._applied)]
        return {name: self._entity(name) for name in names}

    def _entity(self, name: str) -> Any:
        kind, key = name[0], name[1:]
        if kind == _SERVER:
            srv = self._servers.get(key)
            return None if srv is None else _server_state(srv)
        if kind == _POOL:
            pool = self._pools.get(key)
            return None if pool is None else _pool_state(pool)
        if kind == _ESTATE:
            est = self._estates.get(key)
            return None if est is None else _estate_state(est)
        seqs = self._applied.get(key)
        return None if seqs is None else [key, seqs.intervals()]

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON snapshot of the whole engine."""
        return self._assemble(self.meta(), self.entities().items())

    @staticmethod
    def _assemble(meta: dict[str, Any], entities: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        state: dict[str, Any] = {"v": 1, "late": meta.get("late", 0), "dup": meta.get("dup", 0), "applied": {},
                                 "servers": [], "pools": [], "estates": []}
        lists = {_SERVER: state["servers"], _POOL: state["pools"], _ESTATE: state["estates"]}
        for name, value in entities:
            if name[0] == _SOURCE:
                state["applied"][value[0]] = value[1]
            else:
                lists[name[0]].append(value)
        return state

    @classmethod
    def from_entities(cls, meta: dict[str, Any], entities: Iterable[tuple[str, Any]], **kw: Any) -> Engine:
        """Rebuild an engine from :meth:`meta` and its entities (as :meth:`from_state` does)."""
        return cls.from_state(cls._assemble(meta, entities), **kw)

    @classmethod
    def from_state(cls, state: dict[str, Any], lateness_us: int = 60_000_000,
                   idle_timeout_us: int = 300_000_000, sessions: SessionRule | None = None,
                   rules: DupRules | None = None, max_gap_us: int = MAX_GAP_US,
                   evict_after_us: int = EVICT_AFTER_US) -> Engine:
        """Rebuild an engine from :meth:`to_state` output. Every pool charges under ``rules`` from
        here on (a changed rule applies from now on). Snapshots from before session series existed
        load as license series; from before licenses charged, with charged = checkouts (they were
        computed under no rule)."""
        eng = cls(lateness_us, idle_timeout_us, sessions, rules, max_gap_us, evict_after_us)
        eng.late_events = state.get("late", 0)
        eng.duplicate_events = state.get("dup", 0)
        eng._applied = {src: SeqSet(iv) for src, iv in state.get("applied", {}).items()}
        for org, server, max_ts, last_hb, boundary, wall, restarts, *rest in state["servers"]:
            source = rest[0] if rest else LICENSE_SOURCE
            srv = _Server(org, server, source, max_ts, last_hb, boundary, wall,
                          [Event(*r) for r in restarts])
            srv.restart_ids = {r.event_id for r in srv.restarts}
            eng._servers[_skey(org, server, source)] = srv
        for org, server, feature, final_upto, held, c, pending, *rest in state["pools"]:
            # Added over time: source (session series), sessions and units, parts (licenses
            # charged), last_ts (eviction).
            source = rest[0] if rest else LICENSE_SOURCE
            sessions_, units = (rest[1], rest[2]) if len(rest) >= 3 else ({}, {})
            parts = rest[3] if len(rest) >= 4 else {}
            last_ts = rest[4] if len(rest) >= 5 else max([e[1] for e in pending], default=final_upto)
            skey = _skey(org, server, source)
            srv = eng._servers[skey]
            if srv.boundary is not None:
                final_upto = max(final_upto, srv.boundary)  # saved with the pool's last change only
            pool = _Pool(org, server, feature, final_upto, dict(held), c,
                         [Event(*e) for e in pending], source=source,
                         sessions={k: list(v) for k, v in sessions_.items()}, units=dict(units),
                         parts={k: list(v) for k, v in parts.items()}, last_ts=last_ts)
            pool.pending_ids = {e.event_id for e in pool.pending}
            if source == LICENSE_SOURCE:
                pool.set_rule(eng.rules.rule(org, feature))
            eng._pools[skey + _SEP + feature] = pool
            srv.pools.add(feature)
            ekey = _ekey(org, feature, source)
            if ekey not in eng._estates:
                eng._estates[ekey] = _Estate(org, feature, source=source)
            eng._estates[ekey].servers.add(server)
        for org, feature, final_upto, buf, *rest in state["estates"]:
            source = rest[0] if rest else LICENSE_SOURCE
            est = eng._estates.setdefault(_ekey(org, feature, source), _Estate(org, feature, source=source))
            est.final_upto = final_upto
            est.buf = {m: [_saved_row(r, st) for r, st in items] for m, items in buf}
            if len(rest) >= 2:  # servers saved with the estate: its pools may have been evicted
                est.servers.update(rest[1])
        return eng


def _server_state(s: _Server) -> list[Any]:
    return [s.org, s.server, s.max_ts, s.last_hb, s.boundary, s.last_seen_wall, [list(r) for r in s.restarts],
            s.source]


def _pool_state(p: _Pool) -> list[Any]:
    return [p.org, p.server, p.feature, p.final_upto, p.held, p.c, [list(e) for e in p.pending], p.source,
            p.sessions, p.units, p.parts, p.last_ts]


def _estate_state(e: _Estate) -> list[Any]:
    return [e.org, e.feature, e.final_upto,
            [[m, [[list(r), [list(s) for s in st]] for r, st in items]] for m, items in e.buf.items()], e.source,
            sorted(e.servers)]


def _saved_row(row: list[Any], steps: list[list[int]]) -> tuple[MinuteRow, Steps]:
    if len(row) == 15:  # saved before licenses charged: computed under no rule
        row = [*row[:14], row[5], row[6], row[7], dupgroup.NONE, row[14]]
        return MinuteRow(*row), [(a, b, b) for a, b in steps]
    return MinuteRow(*row), [(a, b, c) for a, b, c in steps]


def _median_ts(events: list[Event], org: str, server: str, sessions: bool) -> int:
    """The median time of ``events`` of one server (HEARTBEATs too: a server may be known by them
    alone); the reference for a server whose clock the engine does not know yet."""
    times = sorted(e.ts for e in events
                   if e.server == server and e.org == org and (e.vendor == SESSION_VENDOR) == sessions)
    return times[len(times) // 2]


def _far(ev: Event, ref: int, gap: int) -> str:
    days = abs(ev.ts - ref) / DAY_US
    return (f"{iso_s(ev.ts)} is {days:,.0f} days from the newest time of server {ev.server!r} ({iso_s(ref)}), more "
            f"than {gap / DAY_US:g} days: a damaged date (if many events of this server say so, the damaged one was "
            f"the first the stream saw of it: docs/guarantees.md, \"Bad input\")")


class _Counters:
    __slots__ = ("checkins", "checkouts", "denials", "forced", "orphans", "queued")

    def __init__(self) -> None:
        self.checkouts = self.checkins = self.forced = 0
        self.denials = self.queued = self.orphans = 0


#: The order events are applied in: (ts, seq), read in C (a sort calls it once per event).
_order = itemgetter(Event._fields.index("ts"), Event._fields.index("seq"))


def _skey(org: str, server: str, source: str) -> str:
    # A broker site and a license server may share a name; their clocks and pools stay apart.
    return org + _SEP + server if source == LICENSE_SOURCE else org + _SEP + server + _SEP + source


def _ekey(org: str, feature: str, source: str) -> str:
    return org + _SEP + feature if source == LICENSE_SOURCE else org + _SEP + feature + _SEP + source


def _apply_session(pool: _Pool, ev: Event, cnt: _Counters, rule: SessionRule) -> None:
    """One session state change. A pool's ``c`` is the number of units held by some session.

    LOGON and RECONNECT (re)connect a session from a device: it holds that device's (or its
    user's) license, moving it if the device changed. DISCONNECT releases it unless
    ``disconnected_holds``. LOGOFF ends the session. A repeated change is a no-op; a change to a
    session never seen (its LOGON outside the export) starts it, except LOGOFF/DISCONNECT, which
    are orphans.
    """
    action = ev.action
    key = ev.handle or ""
    sess = pool.sessions.get(key)
    if action in (LOGON, RECONNECT):
        unit = rule.unit_of(ev)
        if sess is None:
            sess = pool.sessions[key] = [unit, 0]
        elif sess[1] and sess[0] != unit:
            _release(pool, sess, cnt)
        sess[0] = unit
        if not sess[1]:
            _acquire(pool, sess, cnt)
    elif action == DISCONNECT:
        if sess is None:
            cnt.orphans += 1
        elif sess[1] and not rule.disconnected_holds:
            _release(pool, sess, cnt)
    elif action == LOGOFF:
        if sess is None:
            cnt.orphans += 1
        else:
            del pool.sessions[key]
            if sess[1]:
                _release(pool, sess, cnt)
    else:  # pragma: no cover - validated at intake
        raise ValueError(f"unknown session action {action!r}")


def _acquire(pool: _Pool, sess: list[Any], cnt: _Counters) -> None:
    sess[1] = 1
    n = pool.units.get(sess[0], 0)
    pool.units[sess[0]] = n + 1
    if n == 0:
        pool.c += 1
        cnt.checkouts += 1


def _release(pool: _Pool, sess: list[Any], cnt: _Counters) -> None:
    sess[1] = 0
    n = pool.units[sess[0]] - 1
    if n:
        pool.units[sess[0]] = n
    else:
        del pool.units[sess[0]]
        pool.c -= 1
        cnt.checkins += 1


def _pool_minutes(pool: _Pool, evs: list[Event], boundary: int,
                  rule: SessionRule) -> Iterable[tuple[MinuteRow, Steps]]:
    """Apply sorted ``evs`` to ``pool`` minute by minute up to ``boundary``; yield rows + curves."""
    n = len(evs)
    i = 0
    m = pool.final_upto
    while m < boundary:
        if pool.c == 0:
            if i >= n:
                break
            first = floor_minute(evs[i].ts)
            if first > m:
                m = first
                if m >= boundary:
                    break
        else:
            stop = boundary if i >= n else min(boundary, floor_minute(evs[i].ts))
            if stop > m:
                # Minutes without an event hold the same count throughout: one row each, alike but
                # for the minute (the rows share their one-step curve, which nothing changes).
                v = pool.c
                ch = pool.charged if pool.group_of is not None else v
                flat: Steps = [(0, v, ch)]
                lic, clic = v * MINUTE_US, ch * MINUTE_US
                org, server, feature, rule_, source = pool.org, pool.server, pool.feature, pool.rule, pool.source
                for minute in range(m, stop, MINUTE_US):
                    yield MinuteRow(POOL, org, server, feature, minute, v, v, lic, 0, 0, 0, 0, 0, 0, ch, ch, clic,
                                    rule_, source), flat
                m = stop
                continue
        end = m + MINUTE_US
        cnt = _Counters()
        had_event = False
        v = pool.c
        grouped = pool.group_of is not None
        ch = pool.charged if grouped else v
        cursor = m
        steps: Steps = []
        # The row's figures are taken as each step is closed (one pass; _row does the same for
        # estates): a step's value counts from its offset to the next step's.
        peak = cpeak = -1
        low = clow = 1 << 62
        lic = clic = 0
        while i < n and evs[i].ts < end:
            s = evs[i].ts
            if s > cursor:
                steps.append((cursor - m, v, ch))
                lic += v * (s - cursor)
                clic += ch * (s - cursor)
                if v > peak:
                    peak = v
                if v < low:
                    low = v
                if ch > cpeak:
                    cpeak = ch
                if ch < clow:
                    clow = ch
                cursor = s
            while i < n and evs[i].ts == s:
                if Engine._apply(pool, evs[i], cnt, rule):
                    had_event = True
                i += 1
            v = pool.c
            ch = pool.charged if grouped else v
        steps.append((cursor - m, v, ch))
        if had_event or steps[0][1] > 0:
            lic += v * (end - cursor)
            clic += ch * (end - cursor)
            yield MinuteRow(POOL, pool.org, pool.server, pool.feature, m, max(peak, v), min(low, v), lic,
                            cnt.checkouts, cnt.checkins, cnt.forced, cnt.denials, cnt.queued, cnt.orphans,
                            max(cpeak, ch), min(clow, ch), clic, pool.rule, pool.source), steps
        m = end


def _row(level: str, org: str, server: str, feature: str, minute: int, steps: Steps,
         cnt: _Counters, source: str, rule: str) -> MinuteRow:
    peak = low = steps[0][1]
    cpeak = clow = steps[0][2]
    lic = clic = 0
    for j, (off, v, ch) in enumerate(steps):
        span = (steps[j + 1][0] if j + 1 < len(steps) else MINUTE_US) - off
        lic += v * span
        clic += ch * span
        if v > peak:
            peak = v
        if v < low:
            low = v
        if ch > cpeak:
            cpeak = ch
        if ch < clow:
            clow = ch
    return MinuteRow(level, org, server, feature, minute, peak, low, lic, cnt.checkouts,
                     cnt.checkins, cnt.forced, cnt.denials, cnt.queued, cnt.orphans, cpeak, clow, clic,
                     rule, source)


def _estate_row(est: _Estate, minute: int, items: list[tuple[MinuteRow, Steps]]) -> MinuteRow:
    # Sum the servers' step curves: every curve starts at offset 0 and changes by (its value - its
    # previous value) at each later step, so the sum changes by the sum of those at each offset.
    changes: dict[int, list[int]] = {}
    for _, steps in items:
        pv = pch = 0
        for off, v, ch in steps:
            d = changes.get(off)
            if d is None:
                changes[off] = [v - pv, ch - pch]
            else:
                d[0] += v - pv
                d[1] += ch - pch
            pv, pch = v, ch
    summed: Steps = []
    total = charged = 0
    for off in sorted(changes):
        dv, dch = changes[off]
        total += dv
        charged += dch
        if not summed or summed[-1][1] != total or summed[-1][2] != charged:
            summed.append((off, total, charged))
    cnt = _Counters()
    for row, _ in items:
        cnt.checkouts += row.checkouts
        cnt.checkins += row.checkins
        cnt.forced += row.forced_releases
        cnt.denials += row.denials
        cnt.queued += row.queued
        cnt.orphans += row.orphans
    rules = {row.dup_group for row, _ in items}
    rule = rules.pop() if len(rules) == 1 else MIXED
    return _row(ESTATE, est.org, "", est.feature, minute, summed, cnt, est.source, rule)


def compute_rows(events: Iterable[Event], until_us: int | None = None,
                 lateness_us: int = 60_000_000, sessions: SessionRule | None = None,
                 rules: DupRules | None = None) -> list[MinuteRow]:
    """Batch recompute: every row of every key from a complete event list, sorted.

    ``until_us`` defaults to the end of the minute of the last event.
    """
    evs = [e for e in events if e.action != HEARTBEAT]
    eng = Engine(lateness_us, idle_timeout_us=2**62, sessions=sessions, rules=rules)
    out = eng.process(sorted(evs, key=_order))
    rows = list(out.rows)
    if until_us is None:
        until_us = floor_minute(max(e.ts for e in evs)) + MINUTE_US if evs else 0
    rows.extend(eng.flush(until_us).rows)
    return sort_rows(rows)


def sort_rows(rows: Iterable[MinuteRow]) -> list[MinuteRow]:
    """The export order: source, level, org, server, feature, minute."""
    return sorted(rows, key=lambda r: (r.source, r.level, r.org, r.server, r.feature, r.minute))


def _charge_out(pool: _Pool, gkey: str, k: int) -> None:
    """A checkout of ``k`` > 1 into the group ``gkey``, which holds something already (Engine._apply
    takes a new group and a checkout of 1 itself)."""
    group = pool.groups[gkey]
    old = max(group)
    group[k] = group.get(k, 0) + 1
    if k > old:
        pool.charged += k - old


def _charge_in(pool: _Pool, ident: str, gkey: str, released: int) -> None:
    """Close ``released`` licenses of ``ident``'s open checkouts (group ``gkey``), oldest first (a
    partial IN reduces the oldest), and update the licenses charged. Engine._apply takes the common
    case itself: a group of checkouts of 1 only, ``ident`` holding no other."""
    parts = pool.parts.get(ident)
    group = pool.groups[gkey]
    old = max(group)
    if parts is None:
        left = group[1] - released
        if left:
            group[1] = left
        else:
            del group[1]
    else:
        _close_oldest(parts, released, group)
        if not parts:
            del pool.parts[ident]
    if group:
        new = max(group)
    else:
        del pool.groups[gkey]
        new = 0
    pool.charged += new - old


def _close_oldest(parts: list[int], n: int, group: dict[int, int] | None) -> None:
    while n > 0:
        first = parts[0]
        if group is not None:
            left = group[first] - 1
            if left:
                group[first] = left
            else:
                del group[first]
        if first <= n:
            parts.pop(0)
            n -= first
        else:
            parts[0] = first - n
            if group is not None:
                group[first - n] = group.get(first - n, 0) + 1
            n = 0
