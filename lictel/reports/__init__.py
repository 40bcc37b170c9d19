"""The answers lictel's users come for, from the stored minute usage, raw events and entitlements.

One module per report. Each report function takes a ClickHouse client and returns plain data: a
:class:`~lictel.reports.common.Report` (title, columns, rows, notes, further tables, charts as data)
that the CLI, the HTTP API and the pages render through :mod:`lictel.render` (table, CSV, JSON,
HTML, SVG). Every query is parameterised;
only validated identifiers (database, level, granularity) are formatted in. Time ranges are
half-open ``[start, end)`` in microseconds; without one, a report covers everything stored.

Definitions (README "Reports" and docs/reports.md say the same for users):

- *Use* of a concurrent feature is the estate concurrency ``c_estate(t)`` of the license series;
  a minute's use is its ``peak``. Minutes without a row had no license out (use 0).
- *Entitlement* of a feature on a day is the sum of ``count`` over its imported entitlements active
  that day (``start`` ≤ day ≤ ``expiry``; uncounted ones are not limits).
- The *overdraft band* is use above the entitlement by at most 10 % of it.
"""
