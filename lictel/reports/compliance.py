"""One period report for an auditor or a vendor meeting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.errors import ConfigError
from lictel.reports.common import (
    CHARGED_NOTE,
    LineChart,
    Report,
    Scope,
    entitled_on,
    entitlements,
    rules_used,
    stored_range,
)
from lictel.reports.denials import denials
from lictel.reports.dormant import dormant
from lictel.reports.forecast import daily_peaks
from lictel.reports.heatmap import heatmap
from lictel.reports.overuse import overuse
from lictel.reports.pseudonyms import Pseudonyms, reason_code
from lictel.reports.sizing import sizing
from lictel.rollups import CHARGED_PEAK_AND_FIRST, peak_and_first
from lictel.timeutil import iso_in, us_date
from lictel.ud import UD, license_model, ud_report
from lictel.vendor.evidence import vendor_evidence


def compliance(client: Client, db: str, scope: Scope, models: dict[str, str],
               pseudo: Pseudonyms | None = None) -> Report:
    """One period report: per feature the entitlement, peak (or licenses assigned), the 99 % cover,
    overuse, denials; then the overuse periods, denials, dormant licenses, user/device assignments,
    and charts (daily peak against the entitlement; hour of week)."""
    data = stored_range(client, db, Scope(scope.org, scope.feature))
    if data is None:
        raise ConfigError("no usage stored for this organisation/feature: nothing to report on")
    # Without --from/--to the period is the whole stored range; the title says which data it covers.
    scope = replace(scope, start=data[0] if scope.start is None else scope.start,
                    end=data[1] if scope.end is None else scope.end)
    assert scope.start is not None and scope.end is not None
    covered = (max(scope.start, data[0]), min(scope.end, data[1]))
    ents = entitlements(client, db, scope.org)
    last_day = us_date(scope.end - 1)
    size = {(r[0], r[2]): r for r in sizing(client, db, scope).rows}
    over = overuse(client, db, scope, models)
    den = denials(client, db, scope)
    dorm = dormant(client, db, scope, models, as_of=last_day)
    ud_rows = ud_report(client, db, models, scope.org, scope.feature, day=last_day, explain=True, after_last_use=True)
    where, params = scope.where()
    peaks = client.query(
        f"SELECT org, feature, {CHARGED_PEAK_AND_FIRST}, "
        f"sum(charged_license_us) FROM {db}.usage_minute FINAL WHERE level = 'estate' "
        f"AND source = 'license' AND {where} GROUP BY org, feature ORDER BY org, feature",
        parameters=params).result_rows
    keys = sorted({(o, f) for o, f, *_ in peaks} | {(r.org, r.feature) for r in ud_rows})
    peak_of = {(o, f): (*peak_and_first(e), int(lic)) for o, f, e, lic in peaks}
    rule_of = {(o, f): r for (o, _, f), r in rules_used(client, db, scope).items()}
    den_of = {(r[0], r[1]): (r[2], r[3]) for r in den.rows}
    ud_of = {(r.org, r.feature): r for r in ud_rows}
    rows = []
    for o, f in keys:
        model = license_model(f, models)
        ent = entitled_on(ents.get((o, f), []), last_day) or None
        periods = [r for r in over.rows if r[0] == o and r[1] == f]
        d, true_d = den_of.get((o, f), (0, 0))
        if model == UD:
            u = ud_of.get((o, f))
            use, when, cover = (u.vendor_rule, last_day.isoformat(), u.optimal) if u else (0, "", 0)
        else:
            p, at, _ = peak_of.get((o, f), (0, 0, 0))
            use, when = p, iso_in(at, scope.tz) if at else ""
            cover = size.get((o, f), [None] * 7)[6]
        rows.append([o, f, "user/device" if model == UD else "concurrent", ent, use, when, cover, len(periods),
                     sum(r[5] for r in periods), d, true_d, "" if model == UD else rule_of.get((o, f), "NONE")])
    data_note = (f"data from {iso_in(covered[0], scope.tz)} to {iso_in(covered[1], scope.tz)}"
                 if covered[1] > covered[0] else "no data in this period")
    rep = Report(f"Compliance report {iso_in(scope.start, scope.tz)} to {iso_in(scope.end, scope.tz)} ({data_note})",
                 ["org", "feature", "model", "entitlement", "peak_or_assigned", "at", "cover_99_or_optimal",
                  "overuse_periods", "overuse_minutes_or_days", "denials", "true_denials", "dup_group"], rows,
                 ["concurrent features: peak = the highest estate concurrency; cover_99 = licenses enough in 99 % of "
                  "the minutes. user/device features: assigned = licenses under the vendor's rule on the last day, "
                  "optimal = the fewest that would cover the same 90 days.", CHARGED_NOTE])
    rep.parts.append(over)
    rep.parts.append(den)
    if pseudo is not None:
        for r in dorm.rows:
            if r[0] == "phantom":
                r[3] = pseudo.holder(r[3])
            elif r[0] == "releasable":
                r[3] = pseudo.device(r[3]) if r[4].startswith("device") else pseudo.user(r[3])
        for part in (den, *den.parts):
            k = part.columns.index("top_reasons")
            for r in part.rows:
                r[k] = "; ".join(reason_code(x) for x in str(r[k]).split("; ")) if r[k] else r[k]
    rep.parts.append(dorm)
    rep.parts.append(vendor_evidence(client, db, scope, pseudo))
    assign: list[list[Any]] = []
    for u in ud_rows:
        for rule, a in (("vendor_rule", u.vendor), ("optimal", u.cover)):
            if a is None:
                continue
            assign += [[u.org, u.feature, rule, "device", pseudo.device(x) if pseudo else x] for x in a.devices]
            assign += [[u.org, u.feature, rule, "user", pseudo.user(x) if pseudo else x] for x in a.users]
    rep.parts.append(Report(f"User/device licenses held on {last_day}", ["org", "feature", "rule", "license",
                                                                          "holder"], assign))
    daily = daily_peaks(client, db, scope)
    for (o, f), series in sorted(daily.items()):
        lines = {"daily peak": [(d, float(v)) for d, v in series]}
        ent_line = [(d, float(entitled_on(ents.get((o, f), []), d))) for d, _ in series]
        if any(v for _, v in ent_line):
            lines["entitlement"] = ent_line
        rep.charts[f"{o} {f}: daily peak"] = LineChart(f"{o} {f}: daily estate peak", lines)
    for name, chart in heatmap(client, db, scope).charts.items():
        rep.charts[f"{name}: hour of week"] = chart
    return rep


