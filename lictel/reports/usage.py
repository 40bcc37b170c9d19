"""Peak, low, average and license-hours per hour, day, week or month."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from lictel.export import rollup_query
from lictel.reports.common import Report, Scope, sql_local_iso
from lictel.timeutil import US


def usage(client: Client, db: str, scope: Scope, level: str = "estate", granularity: str = "day",
          source: str = "license", measure: str = "checkouts") -> Report:
    """Peak, low, time-weighted average and license-hours per period: lictel.export's rollup,
    with the numbers formatted in ClickHouse (a year of hourly pool rows is a bulk answer)."""
    rollup, params = rollup_query(db, level, granularity, scope.org, scope.feature,
                                  None if scope.start is None else scope.start // US,
                                  None if scope.end is None else scope.end // US, source, measure, scope.tz)
    result = client.query(
        f"SELECT org, if(server = '', '(estate)', server), feature, {sql_local_iso('start')}, top, bottom, "
        f"round(lic / (secs * 1e6), 6), round(lic / 3.6e9, 6) FROM ({rollup}) ORDER BY org, server, feature, start",
        parameters=params)
    what = "licenses charged" if measure == "charged" else "checkouts"
    return Report(f"Usage by {granularity} ({level}, {source}, {what}, {scope.tz})",
                  ["org", "server", "feature", granularity, "peak", "low", "avg", "license_hours"],
                  [list(r) for r in result.result_rows],
                  [f"{granularity}s of {scope.tz}; avg is time-weighted over the whole period (minutes without a "
                   "row count as 0); low is 0 when some minute of the period had nothing out."])
