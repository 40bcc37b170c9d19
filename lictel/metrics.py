"""Prometheus counters of long-running components (text format over HTTP).

A component hands over a function that returns its current counters; they are exposed as
``lictel_<component>_<name>_total`` when ``LICTEL_METRICS_PORT`` is set (0 picks a free port, whose
number is written to ``<data_dir>/metrics-<component>.port``), on ``LICTEL_METRICS_HOST``. The sink
adds the live gauges of :mod:`lictel.live`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _Counters(Collector):
    def __init__(self, component: str, read: Callable[[], Mapping[str, float]],
                 gauges: frozenset[str] = frozenset()) -> None:
        self.component = component
        self.read = read
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.read().items()):
            full = f"lictel_{self.component}_{name}"
            if name in self.gauges:
                yield GaugeMetricFamily(full, f"{self.component} {name}", value=value)
            else:
                yield CounterMetricFamily(full, f"{self.component} {name}", value=value)


def serve(component: str, read: Callable[[], Mapping[str, float]], port: int | None, data_dir: Path,
          gauges: frozenset[str] = frozenset(), host: str = "127.0.0.1",
          extra: Collector | None = None) -> int | None:
    """Register the counters (and ``extra``) and, if ``port`` is not None, serve them on ``host``;
    return the port."""
    REGISTRY.register(_Counters(component, read, gauges))
    if extra is not None:
        REGISTRY.register(extra)
    if port is None:
        return None
    server, _ = start_http_server(port, addr=host)
    actual = int(server.server_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / f"metrics-{component}.port").write_text(str(actual))
    return actual
