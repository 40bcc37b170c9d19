"""Licenses that cover a share of the minutes, and the utilisation histogram."""

from __future__ import annotations

import math

from clickhouse_connect.driver.client import Client

from lictel.reports.common import (
    CHARGED_NOTE,
    Report,
    Scope,
    charged_levels,
    cover,
    entitled_on,
    entitlements,
    key_ranges,
    rules_used,
    with_idle,
)
from lictel.timeutil import MINUTE_US, iso_in, us_date


def sizing(client: Client, db: str, scope: Scope, level: str = "estate") -> Report:
    """Licenses that cover 95 %, 99 % and 100 % of the minutes, and the utilisation histogram; the
    minutes are each feature's from its first to its last stored minute inside the scope."""
    ranges = key_ranges(client, db, scope, level)
    if not ranges:
        return Report("Sizing", _SIZING_COLS, [])
    start = min(a for a, _ in ranges.values())
    end = max(b for _, b in ranges.values())
    by_key = charged_levels(client, db, Scope(scope.org, scope.feature, start, end), level)
    ents = entitlements(client, db, scope.org)
    rules = rules_used(client, db, Scope(scope.org, scope.feature, start, end), level)
    rows, hist_rows = [], []
    for (o, s, f), levels in sorted(by_key.items()):
        if (o, s, f) not in ranges:
            continue
        first, last = ranges[(o, s, f)]
        total = (last - first) // MINUTE_US
        dist = with_idle(levels, total)
        mean = sum(p * n for p, n in dist) / total
        ent = entitled_on(ents.get((o, f), []), us_date(last - 1)) or None
        rows.append([o, s or "(estate)", f, total, ent, cover(dist, total, 0.95), cover(dist, total, 0.99),
                     dist[-1][0], round(mean, 3), rules.get((o, s, f), "NONE"), iso_in(first, scope.tz),
                     iso_in(last, scope.tz)])
        for label, n in _histogram(dist, ent or dist[-1][0] or 1):
            hist_rows.append([o, s or "(estate)", f, label, n, round(n / total, 6)])
    rep = Report("Sizing: licenses that cover a share of the minutes", _SIZING_COLS, rows,
                 ["minutes: from the feature's first to its last stored minute (columns from, to); cover_95 = "
                  "the fewest licenses that were enough in at least 95 % of those minutes (minute peak <= "
                  "licenses).", CHARGED_NOTE])
    rep.parts.append(Report("Utilisation histogram (minute peak as a share of the entitlement, or of the highest "
                            "peak without one)", ["org", "server", "feature", "utilisation", "minutes", "share"],
                            hist_rows))
    return rep


_SIZING_COLS = ["org", "server", "feature", "minutes", "entitlement", "cover_95", "cover_99", "cover_100", "mean",
                "dup_group", "from", "to"]
def _histogram(dist: list[tuple[int, int]], base: int) -> list[tuple[str, int]]:
    bins = [0] * 12  # 0 %, (0-10], ..., (90-100], > 100 %
    for peak, n in dist:
        if peak == 0:
            bins[0] += n
        elif peak > base:
            bins[11] += n
        else:
            bins[min(10, math.ceil(peak * 10 / base))] += n
    labels = ["0%"] + [f"{10 * (i - 1)}-{10 * i}%" for i in range(1, 11)] + [">100%"]
    return list(zip(labels, bins, strict=True))


