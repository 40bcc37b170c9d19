"""Denials by feature, user, host or hour; requests for features no server serves."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from lictel.errors import ConfigError
from lictel.identity import SQL_DEVICE, SQL_USER
from lictel.reports.common import Report, Scope
from lictel.timeutil import US, iso_in


def denials(client: Client, db: str, scope: Scope, by: str = "feature", within_min: int = 10) -> Report:
    """Denials by feature, user, host or hour, with reasons; a *true* denial is one the same user did
    not overcome with a successful checkout of the same feature within ``within_min`` minutes. By user
    or host, the largest counts come first. Requests for features the server does not serve
    (UNSUPPORTED) are not denials of a licensed feature: they are a table of their own."""
    if by not in DENIAL_KEYS:
        raise ConfigError(f"--by must be one of {', '.join(DENIAL_KEYS)}, not {by!r}")
    where, params = scope.where("ts", seconds=False)
    key = {"feature": "", "user": ", u AS k", "host": ", h AS k",
           "hour": ", toUnixTimestamp(toStartOfHour(t, {tz:String})) AS k"}[by]
    group = ", k" if key else ""
    order = f"count() DESC, org, feature{group}" if by in ("user", "host") else f"org, feature{group}"
    result = client.query(
        f"SELECT org, feature{key}, count(), "
        f"countIf(next_out = 0 OR next_out - toUnixTimestamp64Micro(t) > {{within:Int64}} * 60000000), "
        f"arrayStringConcat(arrayMap(x -> ifNull(x, '(none)'), topK(3)(reason)), '; ') "
        f"FROM (SELECT d.org AS org, d.feature AS feature, d.u AS u, d.h AS h, d.ts AS t, d.reason AS reason, "
        f"toUnixTimestamp64Micro(o.ts) AS next_out "
        f"FROM (SELECT org, feature, {SQL_USER} AS u, {SQL_DEVICE} AS h, ts, reason FROM {db}.raw_events FINAL "
        f"WHERE action = 'DENIED' AND {where}) AS d "
        f"ASOF LEFT JOIN (SELECT org, feature, {SQL_USER} AS u, ts FROM {db}.raw_events FINAL "
        f"WHERE action = 'OUT') AS o ON d.org = o.org AND d.feature = o.feature AND d.u = o.u AND o.ts > d.ts) "
        f"GROUP BY org, feature{group} ORDER BY {order}",
        parameters={**params, "within": within_min, "tz": scope.tz},
        settings={"join_use_nulls": 0})
    rows = []
    for r in result.result_rows:
        r = list(r)
        if by == "hour":
            r[2] = iso_in(int(r[2]) * US, scope.tz)
        rows.append(r)
    cols = ["org", "feature", *([by] if key else []), "denials", "true_denials", "top_reasons"]
    rep = Report(f"Denials by {by}", cols, rows,
                 [f"true_denials: not followed by a checkout of the same user and feature within {within_min} "
                  "minutes (users compared without case and domain, hosts without case); "
                  "reasons are the server's error codes without the socket detail."])
    unsupported = client.query(
        f"SELECT org, feature, count(), uniqExact({SQL_USER}), toUnixTimestamp64Micro(min(ts)), "
        f"toUnixTimestamp64Micro(max(ts)), "
        f"arrayStringConcat(arrayMap(x -> ifNull(x, '(none)'), topK(3)(reason)), '; ') FROM {db}.raw_events FINAL "
        f"WHERE action = 'UNSUPPORTED' AND {where} GROUP BY org, feature ORDER BY count() DESC, org, feature",
        parameters=params).result_rows
    rep.parts.append(Report(
        "Requests for features the server does not serve (UNSUPPORTED; not denials)",
        ["org", "feature", "requests", "users", "first", "last", "top_reasons"],
        [[o, f, int(n), int(u), iso_in(int(a), scope.tz), iso_in(int(b), scope.tz), r]
         for o, f, n, u, a, b, r in unsupported],
        ["a client asked for a feature no license file of the server names (a wrong feature name or "
         "license path on the client); it uses no license and is not a shortage."]))
    return rep


DENIAL_KEYS = ("feature", "user", "host", "hour")


