"""The sink's live gauges (lictel.live): what a Prometheus scrape reads."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, generate_latest

from lictel.live import LiveGauges
from lictel.timeutil import MINUTE_US, US, parse_ts

M = parse_ts("2026-03-02T09:00:00Z") // US


def _usage(rows: list[tuple[str, str, int, int, int]]) -> dict[str, list[object]]:
    cols: dict[str, list[object]] = {c: [] for c in ("level", "source", "org", "server", "feature", "minute", "peak",
                                                     "charged_peak")}
    for level, server, minute, peak, charged in rows:
        for c, v in zip(cols, (level, "license", "acme", server, "F", minute, peak, charged), strict=True):
            cols[c].append(v)
    return cols


def _scrape(g: LiveGauges) -> str:
    reg = CollectorRegistry()
    reg.register(g)
    return generate_latest(reg).decode()


def test_in_use_is_the_newest_final_minute_and_zero_after_it() -> None:
    final = [M * US + 3 * MINUTE_US]
    g = LiveGauges(lambda: final[0])
    g.stored(_usage([("pool", "lic01", M + 120, 7, 5), ("pool", "lic01", M + 60, 9, 6), ("estate", "", M + 120, 7, 5),
                     ("pool", "lic02", M, 4, 4)]))
    g.set_entitlements([("acme", "", "F", 10, None, dt.date(2099, 1, 1)), ("acme", "lic01", "F", 6, None,
                                                                         dt.date(2000, 1, 1))])
    g.lag = {"lictel-usage": 3}
    text = _scrape(g)
    assert 'lictel_feature_in_use{feature="F",org="acme",server="lic01"} 7.0' in text  # 09:02, not the older 09:01
    assert 'lictel_feature_charged{feature="F",org="acme",server="lic01"} 5.0' in text
    assert 'lictel_feature_in_use{feature="F",org="acme",server="(estate)"} 7.0' in text
    # lic02's newest row is 09:00; 09:01 and 09:02 are final without a row: nothing held.
    assert 'lictel_feature_in_use{feature="F",org="acme",server="lic02"} 0.0' in text
    assert 'lictel_feature_entitled{feature="F",org="acme",server=""} 10.0' in text
    assert 'server="lic01"} 6.0' not in text  # expired
    assert 'lictel_sink_consumer_lag{topic="lictel-usage"} 3.0' in text
    assert "lictel_final_minute_age_seconds " in text
    final[0] = M * US + 10 * MINUTE_US
    assert 'lictel_feature_in_use{feature="F",org="acme",server="lic01"} 0.0' in _scrape(g)
