"""The batch recompute, a column at a time: the engine's minute rows from a whole event history.

``lictel reconcile`` recomputes months of minutes from raw events. Driving :class:`~lictel.engine.Engine`
event by event moves at ~140,000 events/s; this module computes the same rows with whole-array
operations (numpy), so the read from the warehouse, not the arithmetic, sets the pace. It covers
the license series of every feature charged without a ``DUP_GROUP`` rule, and of features under a
rule whose checkouts are all of one license. The rest (session series, a feature under a rule that
has a checkout of more than one license, a server whose clock jumps past ``max_gap_us``, an event
id stored twice) is *declined* per estate key ``(org, feature)`` and left to the engine, which the
caller runs for those keys alone: keys never share a held license, only a server's RESTART, which
both sides see.

How the engine's sequential rules become array operations (DESIGN.md "Concurrency semantics"):

- *What a checkout identity holds* evolves as ``h = max(0, h + x)`` (OUT adds its count, IN takes
  at most what is held): the reflected walk of the prefix sums ``S`` of ``x``, ``h = S - min(0,
  min S so far)``. A RESTART of the identity's ``(org, server, vendor)`` sets ``h`` to 0: it ends a
  segment, the walk restarts, and what the segment held last is a *forced release* at the
  RESTART's instant. Ordered per identity by ``(ts, seq)``, as the engine applies them.
- *A pool's count* ``c(t)`` is the prefix sum of the holding changes in time; the order inside an
  instant does not matter, as only the state after all of an instant's events counts.
- *Licenses charged* under a rule, every checkout of one license: a group is charged 1 while it
  holds anything, so the charged count changes by +1/-1 as a group's holding leaves/returns to 0.
- *An estate's curve* is the sum of its pools' curves: the same prefix sum over all of their
  changes.
- *Minute rows*: a row per key and minute with an event of the key, plus one per minute carried
  over with something held (all alike: the count at its start, the whole minute).

Exact against the engine row for row; ``tests/unit/test_recompute.py`` checks it on simulated,
damaged, reordered and concatenated histories.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from lictel import dupgroup
from lictel.dupgroup import DupRules
from lictel.events import (
    DENIED,
    DEQUEUED,
    IN,
    LICENSE_SOURCE,
    OUT,
    QUEUED,
    RESTART,
    SESSION_VENDOR,
)
from lictel.limits import MAX_GAP_US
from lictel.timeutil import MINUTE_US

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
#: Action codes of :class:`Events` (an action not listed, e.g. REREAD, is code -1: recorded only).
ACTION_CODES = (OUT, IN, DENIED, QUEUED, DEQUEUED, RESTART)
_OUT, _IN, _DENIED, _QUEUED, _DEQUEUED, _RESTART = range(6)
#: The event counters of a row, in MinuteRow's order.
COUNTERS = ("checkouts", "checkins", "forced_releases", "denials", "queued", "orphans")
#: The metric columns of :class:`Rows`, in MinuteRow's order.
METRICS = ("peak", "low", "license_us", "checkouts", "checkins", "forced_releases", "denials", "queued",
           "orphans", "charged_peak", "charged_low", "charged_license_us")


@dataclass
class Events:
    """Events as columns: numbers as arrays, strings as codes into their labels (dictionary columns).

    ``ident``: the checkout identity with its pool, ``(org, server, feature, vendor, user, host,
    handle)``, as a 64-bit hash (or any code equal exactly when identities are); ``ident_check``: a
    second, independent hash of it (two identities of one ``ident`` are told apart by it and
    declined). ``group`` / ``group_check``: the same for the group a ``DUP_GROUP`` rule puts the
    checkout in, with its pool (any value where its feature has no rule). ``id_hash``: a hash of
    the event id (two events stored with one id are declined to the engine).
    """

    ts: I64
    seq: npt.NDArray[np.uint64]
    count: I64
    action: I64  # an index into ACTION_CODES, -1 for actions recorded only
    org: I64
    server: I64
    vendor: I64
    feature: I64
    ident: npt.NDArray[np.uint64]
    ident_check: npt.NDArray[np.uint64]
    group: npt.NDArray[np.uint64]
    group_check: npt.NDArray[np.uint64]
    id_hash: npt.NDArray[np.uint64]
    orgs: Sequence[str]
    servers: Sequence[str]
    vendors: Sequence[str]
    features: Sequence[str]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class Rows:
    """Minute rows as columns (``level``: 0 pool, 1 estate; the key's strings as codes of Events)."""

    level: I64
    org: I64
    server: I64  # -1 at estate level
    feature: I64
    minute: I64
    metrics: dict[str, I64]
    rule: I64  # per row: the dup_group it was charged under, as an index into ``rules``
    rules: list[str]
    declined: set[tuple[str, str]] = field(default_factory=set)  # (org, feature) left to the engine

    def __len__(self) -> int:
        return len(self.minute)


def actions_of(labels: Sequence[str]) -> I64:
    """Action codes for action labels (-1 for an action that changes nothing, e.g. REREAD)."""
    return np.array([ACTION_CODES.index(a) if a in ACTION_CODES else -1 for a in labels], dtype=np.int64)


def compute(ev: Events, until_us: int, rules: DupRules | None = None, max_gap_us: int = MAX_GAP_US) -> Rows:
    """The minute rows of every license key before ``until_us`` (a minute boundary past the last
    event), as :func:`lictel.engine.compute_rows` gives them, but for the keys in ``Rows.declined``."""
    rules = rules or DupRules()
    n_org, n_srv, n_feat = len(ev.orgs), len(ev.servers), len(ev.features)
    session = np.array([v == SESSION_VENDOR for v in ev.vendors], dtype=bool)[ev.vendor] if len(ev) else \
        np.zeros(0, dtype=bool)
    act = ev.action
    keep = (act >= 0) & ~session
    # Estates (org, feature) the engine must take, as a mask over estate codes.
    est_code = ev.org * n_feat + ev.feature
    declined = np.zeros(n_org * n_feat, dtype=bool)
    declined[est_code[session]] = True

    # Servers whose clock spans more than the engine accepts: the engine decides what it refuses.
    srv_code = ev.org * n_srv + ev.server
    lic = ~session
    if lic.any():
        o = _stable_order(srv_code[lic])
        codes, times = srv_code[lic][o], ev.ts[lic][o]
        starts = np.flatnonzero(_firsts(codes))
        spans = np.maximum.reduceat(times, starts) - np.minimum.reduceat(times, starts)
        far = np.zeros(n_org * n_srv, dtype=bool)
        far[codes[starts[spans > max_gap_us]]] = True
        if far.any():
            declined[np.unique(est_code[lic & far[srv_code] & (act != _RESTART)])] = True
    # One event id stored twice (the engine applies it once; it cannot be told apart here).
    hashes = np.sort(ev.id_hash)
    twice = np.zeros(0, dtype=np.int64)
    if len(hashes) and (hashes[1:] == hashes[:-1]).any():
        order = np.argsort(ev.id_hash, kind="stable")
        twice = np.flatnonzero(ev.id_hash[order][1:] == ev.id_hash[order][:-1])
    if len(twice):
        both = order[np.concatenate([twice, twice + 1])]
        declined[est_code[both]] = True
        # A RESTART stored twice: the engine applies it once, to every feature of its server.
        again = np.zeros(n_org * n_srv, dtype=bool)
        again[srv_code[both[act[both] == _RESTART]]] = True
        declined[np.unique(est_code[keep & again[srv_code]])] = True

    # Rules, per estate present: charged as checkouts (NONE) or by groups of checkouts of 1.
    present = np.flatnonzero(np.bincount(est_code[keep & (act != _RESTART)], minlength=n_org * n_feat))
    grouped_est = np.zeros(n_org * n_feat, dtype=bool)
    rule_of: dict[int, str] = {}
    for e in present.tolist():
        rule = rules.rule(ev.orgs[e // n_feat], ev.features[e % n_feat])
        rule_of[e] = rule
        if dupgroup.group_key(rule) is not None:
            grouped_est[e] = True
    if grouped_est.any():
        multi = keep & (act == _OUT) & (ev.count != 1) & grouped_est[est_code]
        declined[np.unique(est_code[multi])] = True

    # Only estates with events of their own (a RESTART's key is its server's, not an estate).
    has_events = np.zeros(n_org * n_feat, dtype=bool)
    has_events[present] = True
    has_events[est_code[session & (act != _RESTART)]] = True
    declined &= has_events
    restart = keep & (act == _RESTART)  # every server's restarts: a declined key's are the engine's
    while True:
        try:
            out = _compute(ev, keep & (act != _RESTART) & ~declined[est_code], restart, until_us, grouped_est,
                           rule_of)
            break
        except _Collision as clash:  # two identities (or groups) of one hash: the engine tells them apart
            declined[est_code[clash.events]] = True
    out.declined = {(ev.orgs[e // n_feat], ev.features[e % n_feat]) for e in np.flatnonzero(declined).tolist()}
    return out


class _Collision(Exception):
    def __init__(self, events: I64) -> None:
        self.events = events  # indices into Events


def _compute(ev: Events, use: Mask, restart: Mask, until_us: int, grouped_est: Mask,
             rule_of: dict[int, str]) -> Rows:
    n_srv, n_feat, n_vend = len(ev.servers), len(ev.features), len(ev.vendors)
    idx = np.flatnonzero(use)
    if not len(idx):
        none = np.zeros(0, dtype=np.int64)
        return Rows(none, none, none, none, none, {m: none for m in METRICS}, none, [])
    # Everything below in (ts, seq) order, as the engine applies events; later sorts are stable.
    idx = idx[np.lexsort((ev.seq[idx], ev.ts[idx]))]
    ts, act, cnt = ev.ts[idx], ev.action[idx], ev.count[idx]
    org, srv, feat = ev.org[idx], ev.server[idx], ev.feature[idx]
    pool, pool_keys = _dense((org * n_srv + srv) * n_feat + feat)
    est_of_pool = (pool_keys // (n_srv * n_feat)) * n_feat + pool_keys % n_feat

    # ---- what each checkout identity holds (OUT and IN only) -------------------------------------
    is_hold = (act == _OUT) | (act == _IN)
    hold = np.flatnonzero(is_hold)
    h_ts = ts[hold]
    h_pool = pool[hold]
    ikey = ev.ident[idx[hold]]
    # Segments: a RESTART of (org, server, vendor) ends what each of its identities holds.
    sv = (org[hold] * n_srv + srv[hold]) * n_vend + ev.vendor[idx[hold]]
    epoch, restarts = _epochs(ev, restart, sv, h_ts, ev.seq[idx[hold]])
    # Per identity, in time order (so epochs rise along it too).
    o = _stable_order(_factorize(ikey))
    hold_o = hold[o]
    ikey, epoch, h_ts, h_pool, sv = ikey[o], epoch[o], h_ts[o], h_pool[o], sv[o]
    _check(ikey, ev.ident_check[idx[hold_o]], idx[hold_o])
    is_in = act[hold_o] == _IN
    k = cnt[hold_o]
    first = _firsts(ikey, epoch)
    walk = _group_cumsum(np.where(is_in, -k, k), first)
    h = walk - np.minimum(0, _group_cummin(walk, first))
    h_prev = np.where(first, 0, np.roll(h, 1))
    # The change of the pool's count, back in time order: +count for an OUT, minus what an IN released.
    d = np.zeros(len(idx), dtype=np.int64)
    d[hold_o] = h - h_prev
    orphan = np.zeros(len(idx), dtype=np.int64)
    orphan[hold_o] = is_in & (h_prev <= 0)
    # The last holding of a segment a RESTART ends is released at that RESTART.
    last = np.append(first[1:], True)
    ended = last & (epoch < _restart_count(sv, restarts))
    forced_at = np.flatnonzero(ended & (h > 0))
    f_ts = restarts[1][_restart_index(sv[forced_at], epoch[forced_at], restarts)] if len(forced_at) else \
        np.zeros(0, dtype=np.int64)
    by_time = np.argsort(f_ts, kind="stable")  # merged into the events by time below
    forced_at, f_ts = forced_at[by_time], f_ts[by_time]
    f_amount = h[forced_at]
    f_pool, f_at = h_pool[forced_at], idx[hold_o[forced_at]]  # and the event of their identity
    # What the walk needed is done with: let it go before the curves (memory at the peak).
    del ikey, epoch, h_ts, h_pool, sv, hold_o, is_in, k, first, walk, h, h_prev, last, ended

    # ---- every event of a pool in time order, then the forced releases merged in -----------------
    e_pool, e_ts, e_d = pool, ts, d
    e_at = np.where(is_hold, idx, -1)  # the event (for its group), -1 where none
    # The event counters: where (in the e_ arrays) each counts, and how much (None: 1 each).
    at_event = np.arange(len(idx))
    if len(forced_at):
        at = np.searchsorted(ts, f_ts, side="right")  # inserted where their time goes: still in order
        e_pool, e_ts, e_d, e_at = (np.insert(e_pool, at, f_pool), np.insert(e_ts, at, f_ts),
                                   np.insert(e_d, at, -f_amount), np.insert(e_at, at, f_at))
        at_event = at_event + np.searchsorted(at, at_event, side="right")
        at_forced = at + np.arange(len(at))
    else:
        at_forced = np.zeros(0, dtype=np.int64)
    out_at, in_at = np.flatnonzero(act == _OUT), np.flatnonzero(act == _IN)
    counters: list[tuple[I64, I64 | None]] = [
        (at_event[out_at], cnt[out_at]),  # checkouts
        (at_event[in_at], -d[in_at]),  # checkins: what the INs released
        (at_forced, f_amount),  # forced releases
        (at_event[act == _DENIED], None),
        (at_event[act == _QUEUED], None),
        (at_event[orphan > 0], None),
    ]
    # Licenses charged: as the count, or (a grouped pool) +1/-1 as a group starts/stops holding.
    e_ch = e_d
    grouped = grouped_est[est_of_pool][e_pool] & (e_at >= 0)
    if grouped.any():
        e_ch = e_d.copy()
        e_ch[grouped] = _group_changes(ev, e_at[grouped], e_d[grouped])

    # Pool and estate curves are independent: the estates' in a second thread (numpy lets go of the
    # interpreter over whole arrays, so the two run on two cores).
    e_est = est_of_pool[e_pool]
    with ThreadPoolExecutor(1, thread_name_prefix="recompute") as other:
        estates_f = other.submit(lambda: _series(_stable_order(e_est), e_est, e_ts, e_d, e_ch, counters, until_us))
        pools = _series(_stable_order(e_pool), e_pool, e_ts, e_d, e_ch, counters, until_us)
        estates = estates_f.result()

    p_key, e_key = pool_keys[pools.pop("key")], estates.pop("key")
    level = np.concatenate([np.zeros(len(p_key), dtype=np.int64), np.ones(len(e_key), dtype=np.int64)])
    row_org = np.concatenate([p_key // (n_srv * n_feat), e_key // n_feat])
    row_srv = np.concatenate([(p_key // n_feat) % n_srv, np.full(len(e_key), -1, dtype=np.int64)])
    row_feat = np.concatenate([p_key % n_feat, e_key % n_feat])
    minute = np.concatenate([pools.pop("minute"), estates.pop("minute")])
    metrics = {m: np.concatenate([pools[m], estates[m]]) for m in METRICS}
    names = sorted({dupgroup.NONE, *rule_of.values()})
    rule_at = np.zeros(max(len(ev.orgs), 1) * n_feat, dtype=np.int64)  # per estate code
    for e, rule in rule_of.items():
        rule_at[e] = names.index(rule)
    return Rows(level, row_org, row_srv, row_feat, minute, metrics, rule_at[row_org * n_feat + row_feat], names)


def _series(o: I64, key: I64, ts: I64, d: I64, dch: I64, counters: list[tuple[I64, I64 | None]],
            until_us: int) -> dict[str, I64]:
    """Minute rows of the curves ``c`` (changes ``d``) and ``charged`` (changes ``dch``; the same
    array where nothing is grouped) of every key; ``o`` orders the events by key, then time.
    ``counters``, in COUNTERS' order: the events each counts at and by how much (None: 1)."""
    alike = dch is d
    key, ts, d = key[o], ts[o], d[o]
    first_of_key = _firsts(key)
    v = _group_cumsum(d, first_of_key)
    ch = v if alike else _group_cumsum(dch[o], first_of_key)
    minute = ts - ts % MINUTE_US
    # Row groups: (key, minute) runs. Instants: (key, ts) runs, their value the state after them.
    g_first = _firsts(key, minute)
    g_start = np.flatnonzero(g_first)
    i_last = np.append((key[1:] != key[:-1]) | (ts[1:] != ts[:-1]), True)
    inst = np.flatnonzero(i_last)
    iv, ich, its = v[inst], ch[inst], ts[inst]
    g_of = np.cumsum(g_first) - 1  # each event's row group
    i_group = g_of[inst]
    i_first = np.append(True, i_group[1:] != i_group[:-1])
    i_start = np.flatnonzero(i_first)
    g_min = minute[g_start]
    g_key = key[g_start]
    # Carried into each group: the state after the key's previous event (0 before its first).
    c_in = np.where(first_of_key[g_start], 0, v[g_start - 1])
    ch_in = np.where(first_of_key[g_start], 0, ch[g_start - 1])
    lead = ts[g_start] - g_min  # the carried state lasts until the first instant of the minute
    has_lead = lead > 0
    del key, ts, d, v, ch, minute, first_of_key, i_last  # per event, no longer needed (memory at the peak)
    # Each instant's state lasts until the next instant of its group, or the end of the minute.
    nxt = np.append(its[1:], 0)
    nxt = np.where(np.append(i_first[1:], True), g_min[i_group] + MINUTE_US, nxt)
    span = nxt - its
    big = np.iinfo(np.int64).max
    out: dict[str, I64] = {
        "key": g_key, "minute": g_min,
        "peak": np.maximum(np.maximum.reduceat(iv, i_start), np.where(has_lead, c_in, -1)),
        "low": np.minimum(np.minimum.reduceat(iv, i_start), np.where(has_lead, c_in, big)),
        "license_us": np.add.reduceat(iv * span, i_start) + c_in * lead,
    }
    if alike:
        out |= {"charged_peak": out["peak"], "charged_low": out["low"], "charged_license_us": out["license_us"]}
    else:
        out |= {
            "charged_peak": np.maximum(np.maximum.reduceat(ich, i_start), np.where(has_lead, ch_in, -1)),
            "charged_low": np.minimum(np.minimum.reduceat(ich, i_start), np.where(has_lead, ch_in, big)),
            "charged_license_us": np.add.reduceat(ich * span, i_start) + ch_in * lead,
        }
    # Each event's row group, to add up counters where they are (no reordering of them).
    group = np.empty(len(o), dtype=np.int64)
    group[o] = g_of
    del g_of
    for name, (where, by) in zip(COUNTERS, counters, strict=True):
        # float weights add integers exactly below 2**53, beyond any minute's counts
        total = np.bincount(group[where], weights=by, minlength=len(g_start))
        out[name] = total.astype(np.int64) if by is not None else total
    # Minutes carried over: from a group's minute to the key's next group (or until_us), holding
    # the state at the group's end.
    end_v = iv[np.append(i_start[1:] - 1, len(inst) - 1)]
    end_ch = ich[np.append(i_start[1:] - 1, len(inst) - 1)]
    last_of_key = np.append(g_key[1:] != g_key[:-1], True)
    next_min = np.where(last_of_key, until_us, np.append(g_min[1:], 0))
    gap = np.where(end_v > 0, np.maximum((next_min - g_min) // MINUTE_US - 1, 0), 0)
    if gap.any():
        rep = np.repeat(np.arange(len(g_min)), gap)
        within = np.arange(len(rep)) - np.repeat(np.cumsum(gap) - gap, gap) + 1
        fv, fch = end_v[rep], end_ch[rep]
        flat = {"key": g_key[rep], "minute": g_min[rep] + within * MINUTE_US, "peak": fv, "low": fv,
                "license_us": fv * MINUTE_US, "charged_peak": fch, "charged_low": fch,
                "charged_license_us": fch * MINUTE_US}
        zero = np.zeros(len(rep), dtype=np.int64)
        out = {name: np.concatenate([col, flat.get(name, zero)]) for name, col in out.items()}
    return out


def _group_changes(ev: Events, at: I64, d: I64) -> I64:
    """For holding changes ``d`` (in time order) of the checkouts of events ``at`` in grouped pools:
    +1 where a group starts holding, -1 where it stops (every checkout of one license, so a group
    holding anything is charged 1)."""
    gkey = ev.group[at]
    o = _stable_order(_factorize(gkey))
    _check(gkey[o], ev.group_check[at[o]], at[o])
    first = _firsts(gkey[o])
    holding = (_group_cumsum(d[o], first) > 0).astype(np.int64)
    prev = np.where(first, 0, np.roll(holding, 1))
    out = np.empty(len(d), dtype=np.int64)
    out[o] = holding - prev
    return out


def _check(key: Any, check: Any, at: I64) -> None:
    """Raise :class:`_Collision` where runs of one ``key`` (sorted) hold more than one ``check``."""
    clash = np.flatnonzero((key[1:] == key[:-1]) & (check[1:] != check[:-1]))
    if len(clash):
        same = np.isin(key, key[clash])
        raise _Collision(at[same])


# ---------------------------------------------------------------------------------------- restarts

def _epochs(ev: Events, restart: Mask, sv: I64, ts: I64, seq: npt.NDArray[np.uint64]) -> tuple[I64, Any]:
    """For each holding event (``ts``, ``seq``: in time order): how many RESTARTs of its (org,
    server, vendor) ``sv`` come before it in ``(ts, seq)`` order; and the RESTARTs ``(sv, ts)``
    sorted by ``sv`` then time, for what follows."""
    r = np.flatnonzero(restart)
    n_srv, n_vend = len(ev.servers), len(ev.vendors)
    r_sv = (ev.org[r] * n_srv + ev.server[r]) * n_vend + ev.vendor[r]
    o = np.lexsort((ev.seq[r], ev.ts[r], r_sv))
    r_sv, r_ts, r_seq = r_sv[o], ev.ts[r][o], ev.seq[r][o]
    if not len(r):
        return np.zeros(len(sv), dtype=np.int64), (r_sv, r_ts)
    # Where each RESTART falls among the events: after those before it in (ts, seq) (an event of
    # the same ts and seq goes first). RESTARTs are few; the events many.
    lo = np.searchsorted(ts, r_ts, side="left")
    hi = np.searchsorted(ts, r_ts, side="right")
    pos = lo.copy()
    for j in np.flatnonzero(hi > lo).tolist():
        pos[j] += int(np.searchsorted(seq[lo[j]:hi[j]], r_seq[j], side="right"))
    # An event's epoch: the RESTARTs of its sv placed at or before it, as one search over (sv, pos).
    n = len(sv) + 1
    placed = r_sv * n + pos
    key = sv * n
    epoch = np.searchsorted(placed, key + np.arange(len(sv)), side="right") - np.searchsorted(placed, key, side="left")
    return epoch, (r_sv, r_ts)


def _restart_count(sv: I64, restarts: Any) -> I64:
    r_sv = restarts[0]
    return np.searchsorted(r_sv, sv, side="right") - np.searchsorted(r_sv, sv, side="left")


def _restart_index(sv: I64, epoch: I64, restarts: Any) -> I64:
    """The index (into the sorted RESTARTs) of the RESTART that ends segment ``epoch`` of ``sv``."""
    return np.searchsorted(restarts[0], sv, side="left") + epoch


# ---------------------------------------------------------------------------------------- helpers

def _dense(key: I64) -> tuple[I64, I64]:
    """Dense codes 0..n-1 for ``key``'s values (non-negative; in value order), and the values."""
    if not len(key):
        return key.astype(np.int64), key.astype(np.int64)
    top = int(key.max()) + 1
    if top <= max(4 * len(key), 1 << 16):  # a table over the key space: no sort
        seen = np.zeros(top, dtype=bool)
        seen[key] = True
        values = np.flatnonzero(seen)
        code = np.cumsum(seen) - 1
        return code[key], values.astype(np.int64)
    values, codes = np.unique(key, return_inverse=True)
    return codes.astype(np.int64), values.astype(np.int64)


def _factorize(key: Any) -> I64:
    """Dense codes 0..n-1 for ``key``'s values, in order of first appearance (a hash table: no sort)."""
    if not len(key):
        return np.zeros(0, dtype=np.int64)
    return pa.array(key).dictionary_encode().indices.to_numpy().astype(np.int64)


def _stable_order(key: I64) -> I64:
    """The stable sort order of non-negative integer ``key``: radix passes of 16 bits, lowest first
    (numpy sorts 16-bit keys stably by radix, several times faster than a comparison sort)."""
    top = int(key.max()) if len(key) else 0
    order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        digit = ((key[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def _firsts(*keys: npt.NDArray[Any]) -> Mask:
    """Where a run of equal ``keys`` (already sorted) starts."""
    n = len(keys[0])
    first = np.zeros(n, dtype=bool)
    if n:
        first[0] = True
        for k in keys:
            first[1:] |= k[1:] != k[:-1]
    return first


def _group_cumsum(x: I64, first: Mask) -> I64:
    """Prefix sums of ``x`` that start again at every ``first``."""
    total = np.cumsum(x)
    starts = np.flatnonzero(first)
    base = total[starts] - x[starts]
    return total - np.repeat(base, np.diff(np.append(starts, len(x))))


def _group_cummin(x: I64, first: Mask) -> I64:
    """Running minimum of ``x`` that starts again at every ``first``: each group is lowered below
    everything before it, so a running minimum over all never reaches back across a start."""
    if not len(x):
        return x
    group = np.cumsum(first) - 1
    span = int(x.max()) - int(x.min()) + 1
    if span * (int(group[-1]) + 1) >= 1 << 62:  # pragma: no cover - beyond any estate
        out = np.empty_like(x)
        starts = np.append(np.flatnonzero(first), len(x))
        for a, b in itertools.pairwise(starts.tolist()):
            out[a:b] = np.minimum.accumulate(x[a:b])
        return out
    shift = group * span
    return np.minimum.accumulate(x - shift) + shift


def events_of(events: Sequence[Any], rules: DupRules | None = None) -> Events:
    """:class:`Events` from :class:`lictel.events.Event` tuples (what tests and small inputs have):
    identities and groups coded exactly, so never two in one code."""
    rules = rules or DupRules()
    cols = list(zip(*events, strict=True)) if events else [()] * 14
    event_id, ts, org, server, vendor, feature, action, _, _, _, count, _, _, seq = cols

    def coded(values: Sequence[Any]) -> tuple[I64, list[Any]]:
        labels: dict[Any, int] = {}
        codes = np.fromiter((labels.setdefault(v, len(labels)) for v in values), dtype=np.int64, count=len(values))
        return codes, list(labels)

    o, orgs = coded(org)
    s, servers = coded(server)
    v, vendors = coded(vendor)
    f, features = coded(feature)
    a, action_labels = coded(action)
    ident, _ = coded([(e.org, e.server, e.feature, e.vendor, e.user, e.host, e.handle or "") for e in events])

    def group(e: Any) -> Any:
        group_of = dupgroup.group_key(rules.rule(e.org, e.feature))
        return (e.org, e.server, e.feature, group_of(e.vendor, e.user, e.host) if group_of else "")

    groups, _ = coded([group(e) for e in events])
    ids, _ = coded(event_id)
    u64 = np.uint64
    return Events(np.array(ts, dtype=np.int64), np.array(seq, dtype=u64), np.array(count, dtype=np.int64),
                  actions_of(action_labels)[a] if len(a) else a, o, s, v, f, ident.astype(u64), ident.astype(u64),
                  groups.astype(u64), groups.astype(u64), ids.astype(u64), orgs, servers, vendors, features)


def minute_rows(rows: Rows, ev: Events, source: str = LICENSE_SOURCE) -> list[Any]:
    """``rows`` as :class:`lictel.engine.MinuteRow` tuples (tests compare them with the engine's)."""
    from lictel.engine import ESTATE, POOL, MinuteRow

    cols = [rows.metrics[m].tolist() for m in METRICS]
    out = []
    for j, (lv, o, s, f, m) in enumerate(zip(rows.level.tolist(), rows.org.tolist(), rows.server.tolist(),
                                              rows.feature.tolist(), rows.minute.tolist(), strict=True)):
        values: list[Any] = [ESTATE if lv else POOL, ev.orgs[o], ev.servers[s] if s >= 0 else "", ev.features[f], m,
                             *(c[j] for c in cols), rows.rules[rows.rule[j]], source]
        out.append(MinuteRow(*values))
    return out


def recompute_rows(events: Sequence[Any], until_us: int | None = None, sessions: Any = None,
                   rules: DupRules | None = None) -> list[Any]:
    """:func:`lictel.engine.compute_rows` for a whole event list, the declined keys by the engine:
    the same rows, sorted (what tests hold against the engine)."""
    from lictel.engine import compute_rows, sort_rows
    from lictel.events import HEARTBEAT

    evs = [e for e in events if e.action != HEARTBEAT]
    if not evs:
        return []
    if until_us is None:
        until_us = max(e.ts for e in evs) // MINUTE_US * MINUTE_US + MINUTE_US
    cols = events_of(evs, rules)
    rows = compute(cols, until_us, rules)
    out = minute_rows(rows, cols)
    if rows.declined:
        out += [r for r in compute_rows(evs, until_us=until_us, sessions=sessions, rules=rules)
                if (r.org, r.feature) in rows.declined]
    return sort_rows(out)
