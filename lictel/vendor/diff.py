"""The vendor's figures lined up with ours, every difference explained where our data can explain it.

For each figure of an imported vendor file (:mod:`.files`) — ``count_used_max``, ``ccu_devices``,
``ud_licensees``, ``installed`` of a server, feature and day; for rows without a server, the
organisation's daily peak — we compute the same figure from our data (:mod:`.view`) over our
sample windows and list every one that differs by more than the tolerance, with the causes we can
show:

- the vendor names a **server we do not ingest**; or our data does not cover the window (**a day
  we lack data for**, or a gap inside it);
- **DUP_GROUP**: the vendor's count is our checkout peak where we charge fewer under a rule, or our
  peak recharged under another rule (the engine replays the server's checkouts under U, H, UH, SITE
  and NONE), so the rule the server applies is not the one we use;
- a **different window boundary**: the vendor's sample window starts at another time of day (read
  from ``DateSampleStartUTC``; for a CSV, found by trying every whole hour) and our figure over
  the vendor's window agrees;
- **restarts and rereads** of the server's vendor daemon inside the window;
- **devices**: the vendor's scrambled device IDs that match none of our hosts (in any form,
  :mod:`.ids`), or devices we count that the vendor does not list;
- **udadmin**: assignments the vendor's server released with udadmin, which no log shows us;
- **entitlements**: the server's installed count against the license files we imported.

A difference none of these explains is listed as unexplained: that is the one to look at first.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.dupgroup import DupRules
from lictel.engine import compute_rows
from lictel.events import Event
from lictel.holdings import replay_start
from lictel.reports.common import Report
from lictel.rollups import CHARGED_PEAK_AND_FIRST, peak_and_first
from lictel.timeutil import US, iso_s
from lictel.ud import UD, license_model, ud_report
from lictel.vendor.files import BUNDLE, Sample
from lictel.vendor.ids import DEVICE, Dictionary, id_bytes
from lictel.vendor.view import (
    UTC_MIDNIGHT,
    Boundary,
    MinutePeaks,
    VendorRow,
    Window,
    minute_peaks,
    server_view,
    window_day_sql,
    windows,
)
from lictel.vendor.view import _entitlements as entitlements

COLUMNS = ["server", "our_server", "feature", "day", "figure", "vendor", "ours", "difference", "explanation",
           "origin"]
FIGURES = ("count_used_max", "ccu_devices", "ud_licensees", "installed")
OTHER_RULES = ("UH", "U", "H", "SITE", "NONE")


@dataclass
class _Server:
    """What we know of one of our servers: its name and the extent of its raw events (µs)."""

    name: str
    first: int
    last: int


def match_server(vendor_name: str, ours: Iterable[str]) -> str | None:
    """Our server a vendor's server name (often an FQDN) means: the same name, without case, or the
    same short name (before the first dot)."""
    names = list(ours)
    if vendor_name in names:
        return vendor_name
    low = vendor_name.lower()
    for n in names:
        if n.lower() == low:
            return n
    short = low.split(".", 1)[0]
    for n in names:
        if n.lower().split(".", 1)[0] == short:
            return n
    return None


def vendor_diff(client: Client, db: str, org: str, samples: list[Sample], models: dict[str, str],
                boundary: Boundary = UTC_MIDNIGHT, tolerance: int = 0) -> Report:
    """Every figure of ``samples`` (one organisation's) that differs from ours by more than
    ``tolerance``, with its explanation."""
    servers = {s: _Server(s, int(a), int(b)) for s, a, b in client.query(
        f"SELECT server, toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)) FROM {db}.raw_events "
        f"WHERE org = {{org:String}} AND vendor != 'SESSIONS' GROUP BY server", parameters={"org": org}).result_rows}
    rows: list[list[Any]] = []
    compared = 0
    by_server: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_server[s.server].append(s)
    notes: list[str] = []
    for vname, group in sorted(by_server.items()):
        if not vname:
            c, r = _estate(client, db, org, group, models, boundary, tolerance)
        else:
            ours = match_server(vname, servers)
            if ours is None:
                c, r = _missing_server(vname, group, sorted(servers))
            else:
                c, r = _server(client, db, org, servers[ours], vname, group, models, boundary, tolerance)
        compared += c
        rows += r
    named = {match_server(v, servers) for v in by_server if v}
    unnamed = sorted(set(servers) - named) if any(by_server) else []
    if unnamed:
        notes.append(f"servers we ingest that the vendor's figures do not name: {', '.join(unnamed)} (their use is "
                     "not in the vendor's view, or the vendor knows them by another name: import with --server)")
    unexplained = sum(1 for r in rows if str(r[8]).startswith("unexplained"))
    notes.insert(0, f"{compared} figure(s) compared, {compared - len(rows)} agree within {tolerance}, {len(rows)} "
                    f"differ: {len(rows) - unexplained} explained, {unexplained} unexplained. Our windows start "
                    f"{boundary.label()}; counts in licenses charged.")
    return Report("The vendor's figures against ours", COLUMNS, rows, notes)


def _missing_server(vname: str, group: list[Sample], ours: list[str]) -> tuple[int, list[list[Any]]]:
    rows = []
    n = 0
    for s in group:
        for fig, value in _figures(s, None):
            n += 1
            if value:
                rows.append([vname, "", s.feature, s.day.isoformat(), fig, value, 0, value,
                             f"a server we do not ingest: no log of {vname} reaches lictel (ours: "
                             f"{', '.join(ours) or 'none'}); add its debug log, or name it with --server on import",
                             s.origin])
    return n, rows


def _figures(s: Sample, model: str | None) -> list[tuple[str, int]]:
    """The figures a sample carries, by name."""
    out = []
    if s.count_used_max is not None:
        out.append(("count_used_max", s.count_used_max))
    if model != UD and (s.devices or (s.kind == BUNDLE and model is not None)):
        out.append(("ccu_devices", len(s.devices)))
    if s.ud_total is not None and model != "concurrent":
        out.append(("ud_licensees", s.ud_total))
    if s.installed is not None:
        out.append(("installed", s.installed))
    return out


def _vendor_boundary(s: Sample) -> Boundary | None:
    if s.window_start is None:
        return None
    return Boundary((s.window_start // (60 * US)) % 1440, "UTC")


def _server(client: Client, db: str, org: str, srv: _Server, vname: str, group: list[Sample],
            models: dict[str, str], boundary: Boundary, tolerance: int) -> tuple[int, list[list[Any]]]:
    features = sorted({s.feature for s in group})
    first, last = min(s.day for s in group), max(s.day for s in group)
    ents = entitlements(client, db, org)
    ours = {(r.feature, r.day): r for r in server_view(client, db, org, srv.name, features, boundary, first, last,
                                                        models, ents)}
    alt: dict[Boundary, dict[tuple[str, dt.date], VendorRow]] = {}
    ctx = _Context(client, db, org, srv, features, models, boundary, first, last)
    rows: list[list[Any]] = []
    n = 0
    for s in sorted(group, key=lambda s: (s.feature, s.day, s.line)):
        model = license_model(s.feature, models)
        mine = ours[(s.feature, s.day)]
        vb = _vendor_boundary(s)
        if vb is not None and vb != boundary and vb not in alt:
            alt[vb] = {(r.feature, r.day): r for r in server_view(client, db, org, srv.name, features, vb, first,
                                                                   last, models, ents)}
        theirs_window = alt.get(vb, {}).get((s.feature, s.day)) if vb is not None and vb != boundary else None
        for fig, value in _figures(s, model):
            n += 1
            have = getattr(mine, fig)
            if abs(value - have) <= tolerance:
                continue
            causes = ctx.explain(s, fig, value, mine, vb, theirs_window, tolerance)
            rows.append([vname, srv.name, s.feature, s.day.isoformat(), fig, value, have, value - have,
                         "; ".join(causes) if causes else "unexplained: none of the known causes shows in our data",
                         s.origin])
    return n, rows


class _Context:
    """What explaining one server's differences needs, each part read once, when first needed."""

    def __init__(self, client: Client, db: str, org: str, srv: _Server, features: list[str], models: dict[str, str],
                 boundary: Boundary, first: dt.date, last: dt.date) -> None:
        self.client, self.db, self.org, self.srv = client, db, org, srv
        self.features, self.models, self.boundary = features, models, boundary
        self.first, self.last = first, last
        self._peaks: MinutePeaks | None = None
        self._shift: dict[tuple[str, dt.date], dict[int, int]] | None = None
        self._recharged: dict[tuple[str, str], dict[int, int]] = {}
        self._daemon: list[tuple[int, str, int]] | None = None
        self._hosts: Dictionary | None = None
        self._events: list[Event] | None = None

    def explain(self, s: Sample, fig: str, value: int, mine: VendorRow, vb: Boundary | None,
                theirs_window: VendorRow | None, tolerance: int) -> list[str]:
        out: list[str] = []
        w0, w1 = mine.window_start, mine.window_stop
        if w1 <= self.srv.first or w0 > self.srv.last:
            out.append(f"a day we lack data for: our data of {self.srv.name} runs from {iso_s(self.srv.first)} to "
                       f"{iso_s(self.srv.last)}")
        elif w0 < self.srv.first or w1 > self.srv.last + 1:
            out.append(f"our data of {self.srv.name} covers only part of the window (it runs from "
                       f"{iso_s(self.srv.first)} to {iso_s(self.srv.last)})")
        if theirs_window is not None and vb is not None:
            other = getattr(theirs_window, fig)
            verdict = "agrees" if abs(other - value) <= tolerance else f"is {other}"
            out.append(f"a different window boundary: the vendor's sample window starts {vb.label()} "
                       f"({iso_s(s.window_start or 0)}), ours {self.boundary.label()}; over the vendor's window "
                       f"ours {verdict}")
        elif vb is None and fig == "count_used_max":
            hit = self._shifted(s.feature, s.day, value, tolerance)
            if hit is not None:
                out.append(f"a different window boundary: with days starting {hit} our figure agrees")
        if fig == "count_used_max":
            out += self._dup_group(s, value, mine, tolerance)
        if fig in ("count_used_max", "ccu_devices"):
            out += self._restarts(w0, w1)
        if fig == "ccu_devices":
            out += self._devices(s, mine)
        if fig == "ud_licensees":
            released = (s.users_released or 0) + (s.devices_released or 0)
            if released and value < mine.ud_licensees:
                out.append(f"udadmin: the server released {s.users_released or 0} user and {s.devices_released or 0}"
                           f" device assignment(s), which no log shows; we still count them")
        if fig == "installed":
            where = {"server": f"imported for {self.srv.name}", "organisation": "the organisation's (none imported "
                     f"with --server {self.srv.name})", "": "none imported"}[mine.installed_from]
            out.append(f"entitlements: the server has {value} installed, our license files give {mine.installed} "
                       f"({where}); import the server's license files with `lictel entitlements import --server`")
        return out

    # -- window boundary, for files that give only a date

    def _shifted(self, feature: str, day: dt.date, value: int, tolerance: int) -> str | None:
        if self._shift is None:
            self._shift = defaultdict(dict)
            mp = self._minute_peaks()
            for hours in range(1, 24):
                b = Boundary((self.boundary.minute_of_day + 60 * hours) % 1440, self.boundary.tz)
                wins = windows(b, self.first - dt.timedelta(days=1), self.last + dt.timedelta(days=1))
                for (f, k), best in mp.window_max(wins).items():
                    self._shift[(f, wins[k].day)][b.minute_of_day] = best
        found = self._shift.get((feature, day), {})
        for hours in range(1, 24):
            minute = (self.boundary.minute_of_day + 60 * hours) % 1440
            if abs(found.get(minute, 0) - value) <= tolerance:
                return Boundary(minute, self.boundary.tz).label()
        return None

    def _minute_peaks(self) -> MinutePeaks:
        if self._peaks is None:
            wins = windows(self.boundary, self.first - dt.timedelta(days=1), self.last + dt.timedelta(days=1))
            self._peaks = minute_peaks(self.client, self.db, self.org, self.srv.name, self.features, wins[0].start,
                                       wins[-1].end)
        return self._peaks

    # -- DUP_GROUP

    def _dup_group(self, s: Sample, value: int, mine: VendorRow, tolerance: int) -> list[str]:
        out = []
        if mine.checkouts_max != mine.count_used_max and abs(mine.checkouts_max - value) <= tolerance:
            out.append(f"DUP_GROUP: the vendor counts every checkout ({mine.checkouts_max}) where we charge "
                       f"{mine.count_used_max} under DUP_GROUP={mine.dup_group}: the server does not apply that rule")
            return out
        if value > mine.checkouts_max + tolerance:
            return out  # a rule charges at most every checkout: none reaches the vendor's count
        for rule in OTHER_RULES:
            if rule == mine.dup_group:
                continue
            got = self._recharge(s.feature, rule, mine.window_start, mine.window_stop)
            if abs(got - value) <= tolerance and abs(got - mine.count_used_max) > tolerance:
                out.append(f"DUP_GROUP: charged under DUP_GROUP={rule} our peak is {got}, as the vendor counts; we "
                           f"charge under {mine.dup_group}: import the license file that names the rule, or give "
                           f"--dup-group {s.feature}={rule}")
                break
        return out

    def _recharge(self, feature: str, rule: str, start: int, end: int) -> int:
        """Our peak in licenses charged under ``rule`` in ``[start, end)``: the engine over the server's
        raw events of the feature, from the last instant before the compared days when nothing of it
        was held (the state is empty there under every rule) to the end of the last compared day."""
        per_minute = self._recharged.get((feature, rule))
        if per_minute is None:
            since, until = self._replay_span(feature)
            events = [e for e in self._raw_events() if since <= e.ts < until
                      and (e.feature == feature or e.action == "RESTART")]
            rows = compute_rows(events, until_us=until, rules=DupRules({feature: rule}))
            per_minute = self._recharged[(feature, rule)] = {
                r.minute: r.charged_peak for r in rows if r.level == "pool" and r.feature == feature}
        return max((v for m, v in per_minute.items() if start <= m < end), default=0)

    def _replay_span(self, feature: str) -> tuple[int, int]:
        """``[since, until)`` (µs) of the replay for ``feature``: from where the history of its held
        minutes lets it start (:func:`replay_start`) to the end of the last compared window."""
        wins = windows(self.boundary, self.first, self.last)
        since = replay_start(self.client, self.db, self.org, self.srv.name, [feature], wins[0].start)
        return (self.srv.first if since is None else since), wins[-1].end

    def _raw_events(self) -> list[Event]:
        if self._events is None:
            result = self.client.query(
                f"SELECT event_id, toUnixTimestamp64Micro(ts), org, server, vendor, feature, action, user, host, "
                f"handle, count, reason, source, seq FROM {self.db}.raw_events FINAL WHERE org = {{org:String}} "
                f"AND server = {{server:String}} AND vendor != 'SESSIONS' AND action IN ('OUT', 'IN', 'RESTART') "
                f"ORDER BY ts, seq", parameters={"org": self.org, "server": self.srv.name})
            self._events = [Event(*r) for r in result.result_rows]
        return self._events

    # -- restarts and rereads

    def _restarts(self, start: int, end: int) -> list[str]:
        if self._daemon is None:
            self._daemon = [(int(t), str(a), 0) for t, a in self.client.query(
                f"SELECT toUnixTimestamp64Micro(ts), action FROM {self.db}.raw_events FINAL WHERE org = {{org:String}} "
                f"AND server = {{server:String}} AND action IN ('RESTART', 'REREAD') ORDER BY ts",
                parameters={"org": self.org, "server": self.srv.name}).result_rows]
        found = [(t, a) for t, a, _ in self._daemon if start <= t < end]
        if not found:
            return []
        what = {"RESTART": "a vendor daemon restart", "REREAD": "a license reread"}
        listed = ", ".join(f"{what[a]} at {iso_s(t)}" for t, a in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return [f"restarts and rereads in the window: {listed}{more} (the server's own count can treat the "
                "checkouts made again after a restart or reread differently)"]

    # -- devices

    def _devices(self, s: Sample, mine: VendorRow) -> list[str]:
        if self._hosts is None:
            self._hosts = Dictionary()
            self._hosts.add((str(h) for (h,) in self.client.query(
                f"SELECT DISTINCT host FROM {self.db}.raw_events WHERE org = {{org:String}} AND host != '' "
                f"AND vendor != 'SESSIONS'", parameters={"org": self.org}).result_rows), DEVICE)
        matched = {}
        unknown = []
        for scrambled in s.devices:
            m = self._hosts.match(scrambled)
            if m is None:
                unknown.append(scrambled)
            else:
                matched[m.name.lower()] = m
        out = []
        if unknown:
            bad = sum(1 for x in unknown if id_bytes(x) is None)
            extra = f" ({bad} of them not a scrambled ID at all)" if bad else ""
            out.append(f"devices: {len(unknown)} of the vendor's device ID(s) match no device we have seen{extra}, "
                       f"e.g. {unknown[0]}: clients of a server or a license file we do not ingest")
        ours = {d.lower() for d in mine.devices}
        elsewhere = sorted(set(matched) - ours)
        if elsewhere:
            out.append(f"devices: {len(elsewhere)} device(s) the vendor lists hold no license in our window, e.g. "
                       f"{matched[elsewhere[0]].name}")
        missing = sorted(ours - set(matched))
        if missing and s.devices:
            out.append(f"devices: {len(missing)} device(s) we count the vendor does not list, e.g. {missing[0]}")
        return out


def _estate(client: Client, db: str, org: str, group: list[Sample], models: dict[str, str], boundary: Boundary,
            tolerance: int) -> tuple[int, list[list[Any]]]:
    """Rows without a server: the organisation's daily figures (the estate peak of licenses charged;
    user/device features: licenses assigned under the vendor's rule, UTC days)."""
    first, last = min(s.day for s in group), max(s.day for s in group)
    wins = windows(boundary, first, last)
    features = sorted({s.feature for s in group})
    peaks = _estate_peaks(client, db, org, features, boundary, wins)
    ud: dict[tuple[str, dt.date], Any] = {}
    for f in features:
        if license_model(f, models) == UD:
            ud |= {(f, r.day): r for r in ud_report(client, db, models, org, f)}
    rows = []
    n = 0
    for s in sorted(group, key=lambda s: (s.day, s.feature, s.line)):
        if s.count_used_max is None:
            continue
        n += 1
        theirs = s.count_used_max
        if license_model(s.feature, models) == UD:
            r = ud.get((s.feature, s.day))
            ours = r.vendor_rule if r else 0
            evidence = (f"{r.users_90d} users in the 90 days to {s.day}; vendor rule {r.vendor_rule}, optimum "
                        f"{r.optimal}" if r else "no use in the 90 days")
        else:
            ours, at, checkouts = peaks.get((s.feature, s.day), (0, 0, 0))
            evidence = f"estate peak {ours} at {iso_s(at)}" if at else "no license out that day"
            if checkouts != ours and abs(checkouts - theirs) <= tolerance:
                evidence += (f"; DUP_GROUP: the vendor counts every checkout ({checkouts}) where we charge {ours} "
                             "under the feature's rule")
        if abs(theirs - ours) > tolerance:
            rows.append(["(estate)", "(estate)", s.feature, s.day.isoformat(), "count_used_max", theirs, ours,
                         theirs - ours, evidence, f"{s.origin}:{s.line}"])
    return n, rows


def _estate_peaks(client: Client, db: str, org: str, features: list[str], boundary: Boundary,
                  wins: list[Window]) -> dict[tuple[str, dt.date], tuple[int, int, int]]:
    """(feature, day) → (charged peak, its first minute µs, checkout peak) of the estate, aggregated
    by ClickHouse per window day."""
    result = client.query(
        f"SELECT feature, {window_day_sql(boundary)} AS d, {CHARGED_PEAK_AND_FIRST}, max(peak) "
        f"FROM {db}.usage_minute FINAL WHERE level = 'estate' AND source = 'license' AND org = {{org:String}} "
        f"AND feature IN {{features:Array(String)}} AND minute >= toDateTime({{a:Int64}}, 'UTC') "
        f"AND minute < toDateTime({{b:Int64}}, 'UTC') GROUP BY feature, d",
        parameters={"org": org, "features": features, "a": wins[0].start // US, "b": -(-wins[-1].end // US),
                    "tz": boundary.tz, "off": boundary.minute_of_day * 60})
    out: dict[tuple[str, dt.date], tuple[int, int, int]] = {}
    for f, d, enc, checkouts in result.result_rows:
        peak, at = peak_and_first(enc)
        out[(str(f), d)] = (peak, at if peak else 0, int(checkouts))
    return out
