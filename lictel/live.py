"""Live gauges of the sink for Prometheus (and the Grafana dashboard in docs/grafana/):

- ``lictel_feature_in_use{org,server,feature}``: licenses checked out in the newest final minute
  (its peak), per license server and, with ``server="(estate)"``, summed over the organisation's
  servers; 0 once newer minutes are final without a row for it (no row: nothing held);
- ``lictel_feature_charged{org,server,feature}``: the same in licenses charged (DUP_GROUP);
- ``lictel_feature_entitled{org,server,feature}``: the count entitled today, from imported license
  files and contracts (``server=""``: the organisation's, not tied to a server);
- ``lictel_sink_consumer_lag{topic}``: messages the sink has yet to read, per topic;
- ``lictel_final_minute_age_seconds``: how far the point up to which every minute is final lags the
  wall clock: the freshness of every figure.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lictel.timeutil import MINUTE_US, US

ESTATE = "(estate)"


class LiveGauges(Collector):
    """What the sink stored last, kept for the scrape."""

    def __init__(self, final_upto: Callable[[], int | None]) -> None:
        # (org, server, feature) -> (minute µs, peak, charged); server ESTATE for the estate level.
        self.latest: dict[tuple[str, str, str], tuple[int, int, int]] = {}
        self.final_upto = final_upto  # µs: every minute before it is final (the sink's progress)
        self.entitled: dict[tuple[str, str, str], int] = {}
        self.lag: dict[str, int] = {}

    def stored(self, usage: dict[str, list[Any]]) -> None:
        for lv, src, o, srv, f, m, peak, charged in zip(
                usage["level"], usage["source"], usage["org"], usage["server"], usage["feature"], usage["minute"],
                usage["peak"], usage["charged_peak"], strict=True):
            if src != "license":
                continue
            server = ESTATE if lv == "estate" else srv
            minute = int(m) * US
            key = (o, server, f)
            old = self.latest.get(key)
            if old is None or minute >= old[0]:
                self.latest[key] = (minute, int(peak), int(charged))

    def set_entitlements(self, rows: list[tuple[str, str, str, int, dt.date | None, dt.date]]) -> None:
        today = dt.datetime.now(dt.UTC).date()
        out: dict[tuple[str, str, str], int] = {}
        for o, server, f, n, start, expiry in rows:
            if (start is None or start <= today) and today <= expiry:
                out[(o, server, f)] = out.get((o, server, f), 0) + n
        self.entitled = out

    def collect(self) -> Iterator[Metric]:
        labels = ["org", "server", "feature"]
        in_use = GaugeMetricFamily("lictel_feature_in_use", "Licenses checked out in the newest final minute",
                                   labels=labels)
        charged = GaugeMetricFamily("lictel_feature_charged", "Licenses charged (DUP_GROUP) in the newest final "
                                    "minute", labels=labels)
        final = self.final_upto()
        for (o, server, f), (minute, peak, ch) in sorted(self.latest.items()):
            # A newer final minute without a row held nothing of it.
            current = final is None or minute + MINUTE_US >= final
            in_use.add_metric([o, server, f], peak if current else 0)
            charged.add_metric([o, server, f], ch if current else 0)
        yield in_use
        yield charged
        entitled = GaugeMetricFamily("lictel_feature_entitled", "Licenses entitled today", labels=labels)
        for (o, server, f), n in sorted(self.entitled.items()):
            entitled.add_metric([o, server, f], n)
        yield entitled
        lag = GaugeMetricFamily("lictel_sink_consumer_lag", "Messages the sink has yet to read", labels=["topic"])
        for topic, n in sorted(self.lag.items()):
            lag.add_metric([topic], n)
        yield lag
        if final is not None:
            yield GaugeMetricFamily("lictel_final_minute_age_seconds", "Wall clock minus the instant up to which "
                                    "every minute is final", value=max(0.0, time.time() - final / US))
