"""Evidence for a negotiation: per license server and feature, what the upload will tell the vendor,
what the vendor's side reported (when imported), and what we measured, with the peak minute and
who held the licenses then. A section of ``lictel report compliance``."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.holdings import holders_at_peak, read_rows, replay_start, segments
from lictel.reports.common import Report, Scope
from lictel.reports.pseudonyms import Pseudonyms
from lictel.rollups import CHARGED_PEAK_AND_FIRST, PEAK_AND_FIRST, peak_and_first
from lictel.timeutil import iso_in, local_date, to_us
from lictel.vendor.diff import match_server
from lictel.vendor.files import stored

COLUMNS = ["org", "server", "feature", "vendor_view_max", "vendor_reported_max", "vendor_reported_days",
           "measured_peak", "measured_charged_peak", "dup_group", "peak_at", "holders_at_peak"]


def vendor_evidence(client: Client, db: str, scope: Scope,
                    pseudo: Pseudonyms | None = None) -> Report:
    """One row per (org, server, feature) of the period: the vendor view's largest daily
    ``count_used_max``, the vendor's largest reported one, our measured peak in checkouts and in
    licenses charged with its first minute, and the holders at that minute's peak instant."""
    assert scope.start is not None and scope.end is not None
    first, last = local_date(scope.start, "UTC"), local_date(scope.end - 1, "UTC")
    # The vendor view's largest daily count_used_max over these UTC days: the largest minute peak in
    # licenses charged over the days' windows (lictel.vendor.view), in one aggregate.
    days = replace(scope, start=to_us(dt.datetime.combine(first, dt.time(), dt.UTC)),
                   end=to_us(dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)))
    where, params = days.where()
    best = {(o, srv, f): int(m) for o, srv, f, m in client.query(
        f"SELECT org, server, feature, max(charged_peak) FROM {db}.usage_minute FINAL WHERE level = 'pool' "
        f"AND source = 'license' AND {where} GROUP BY org, server, feature", parameters=params).result_rows}
    reported: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for s in stored(client, db, scope.org):
        if s.server and s.count_used_max is not None and first <= s.day <= last and \
                (not scope.feature or s.feature == scope.feature):
            reported[(s.org, s.server, s.feature)].append(s.count_used_max)
    where, params = scope.where()
    measured = {(o, srv, f): (peak_and_first(p), peak_and_first(c), rule) for o, srv, f, p, c, rule in client.query(
        f"SELECT org, server, feature, {PEAK_AND_FIRST}, {CHARGED_PEAK_AND_FIRST}, argMax(dup_group, minute) "
        f"FROM {db}.usage_minute FINAL WHERE level = 'pool' AND source = 'license' AND {where} "
        f"GROUP BY org, server, feature ORDER BY org, server, feature", parameters=params).result_rows}
    rows: list[list[Any]] = []
    servers = sorted({(o, srv) for o, srv, _ in measured})
    for o, srv in servers:
        features = sorted(f for oo, ss, f in measured if (oo, ss) == (o, srv))
        since = replay_start(client, db, o, srv, features, scope.start)
        segs = list(segments(read_rows(client, db, o, srv, features, scope.end, since)))
        for f in features:
            (peak, _), (charged, at), rule = measured[(o, srv, f)]
            instant, held = holders_at_peak([s for s in segs if s.feature == f], at) if charged else (at, [])
            who = ", ".join(sorted(f"{_holder(s.user, s.host, pseudo)} x{s.count} since {iso_in(s.start, scope.tz)}"
                                   for s in held))
            # The vendor may name the server by its FQDN: its figures are listed under ours when they match.
            theirs = [n for (ro, rs, rf), v in reported.items() if ro == o and rf == f and match_server(rs, [srv])
                      for n in v]
            rows.append([o, srv, f, best.get((o, srv, f), 0), max(theirs) if theirs else None, len(theirs), peak,
                         charged, rule, iso_in(instant, scope.tz) if charged else "", who])
    return Report("The vendor's view, the vendor's figures and ours, per license server", COLUMNS, rows,
                  ["vendor_view_max: the largest daily count_used_max the upload will report (UTC days, licenses "
                   "charged); vendor_reported_max: the largest the vendor's imported figures show (lictel vendor "
                   "import), over vendor_reported_days days; measured: our peak in checkouts and in licenses charged "
                   "under dup_group, the first instant it was reached, and who held licenses then (user@host, "
                   "licenses, since)."])


def _holder(user: str, host: str, pseudo: Pseudonyms | None) -> str:
    return pseudo.holder(f"{user}@{host}") if pseudo else f"{user}@{host}"
