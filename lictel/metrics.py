"""The operations endpoint of long-running components: ``/metrics`` (Prometheus) and ``/healthz``.

A component hands over a function that returns its current counters; they are exposed as
``lictel_<component>_<name>_total`` when ``LICTEL_METRICS_PORT`` is set (0 picks a free port, whose
number is written to ``<data_dir>/metrics-<component>.port``), on ``LICTEL_METRICS_HOST``. The sink
adds the live gauges of :mod:`lictel.live`.

``/healthz`` answers JSON: ``component``, ``status`` (``ok``, ``starting`` or ``failing``, with
``reason``) and what the component knows of its work (``lictel status`` shows it). It answers 200
unless the status is ``failing`` (503), so it serves as a liveness and readiness probe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
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


Health = Callable[[], dict[str, Any]]
log = logging.getLogger("lictel.metrics")


class _Handler(BaseHTTPRequestHandler):
    server: _OpsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif path == "/healthz":
            try:
                body = {"component": self.server.component, "status": "ok", **self.server.health()}
            except Exception as exc:  # a health check that breaks is a failing component, not a crash
                body = {"component": self.server.component, "status": "failing", "reason": f"health check: {exc}"}
            body["uptime_s"] = round(time.monotonic() - self.server.started, 1)
            code = 503 if body["status"] == "failing" else 200
            self._send(code, "application/json", json.dumps(body, default=str).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"lictel: /metrics and /healthz are served here\n")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


class _OpsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], component: str, health: Health) -> None:
        super().__init__(addr, _Handler)
        self.component = component
        self.health = health
        self.started = time.monotonic()


def serve(component: str, read: Callable[[], Mapping[str, float]], port: int | None, data_dir: Path,
          gauges: frozenset[str] = frozenset(), host: str = "127.0.0.1",
          extra: Collector | None = None, health: Health | None = None) -> int | None:
    """Register the counters (and ``extra``) and, if ``port`` is not None, serve them and the
    component's ``health`` on ``host``; return the port."""
    REGISTRY.register(_Counters(component, read, gauges))
    if extra is not None:
        REGISTRY.register(extra)
    if port is None:
        return None
    server = _OpsServer((host, port), component, health or (lambda: {}))
    threading.Thread(target=server.serve_forever, name=f"lictel-{component}-ops", daemon=True).start()
    actual = int(server.server_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / f"metrics-{component}.port").write_text(str(actual))
    log.info("metrics and health of %s on http://%s:%d/metrics and /healthz", component, host, actual)
    return actual
