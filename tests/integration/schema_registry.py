"""A Schema Registry for the tests: the REST calls lictel's client makes (register a version, look a
schema up under a subject, fetch a schema by id), with the registry's error bodies, over HTTP or
TLS and with basic auth. The real registry is a JVM service this machine cannot run; this peer
answers as its API reference says, and counts what it was asked."""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: SchemaRegistry

    def _authorised(self) -> bool:
        want = self.server.credentials
        if want is None:
            return True
        given = self.headers.get("Authorization", "")
        if given == "Basic " + base64.b64encode(want.encode()).decode():
            return True
        self.server.counts["unauthorised"] += 1
        self._reply(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def do_POST(self) -> None:
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        schema = json.loads(body["schema"])
        path = self.path.split("?", 1)[0]
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            if not self.server.writable:
                self.server.counts["denied"] += 1
                self._reply(403, {"error_code": 40301, "message": "User is denied operation Write on Subject"})
                return
            self.server.counts["register"] += 1
            self._reply(200, {"id": self.server.register(m.group(1), schema)})
        elif m := re.fullmatch(r"/subjects/([^/]+)", path):
            self.server.counts["lookup"] += 1
            versions = self.server.subjects.get(m.group(1))
            if versions is None:
                self._reply(404, {"error_code": 40401, "message": f"Subject '{m.group(1)}' not found."})
                return
            for number, sid in enumerate(versions, 1):
                if self.server.ids[sid] == schema:
                    self._reply(200, {"subject": m.group(1), "id": sid, "version": number,
                                      "schema": json.dumps(schema)})
                    return
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
        else:
            self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def do_GET(self) -> None:
        if not self._authorised():
            return
        m = re.fullmatch(r"/schemas/ids/(\d+)", self.path.split("?", 1)[0])
        if m and int(m.group(1)) in self.server.ids:
            self.server.counts["fetch"] += 1
            self._reply(200, {"schema": json.dumps(self.server.ids[int(m.group(1))])})
        else:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})

    def _reply(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class SchemaRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cert: tuple[Path, Path] | None = None, credentials: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.credentials = credentials  # "key:secret" for basic auth, or None
        self.writable = True
        self.subjects: dict[str, list[int]] = {}
        self.ids: dict[int, Any] = {}
        self.counts: Counter[str] = Counter()
        self.scheme = "http"
        if cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(cert[0]), str(cert[1]))
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    def register(self, subject: str, schema: Any) -> int:
        sid = next((i for i, s in self.ids.items() if s == schema), len(self.ids) + 1)
        self.ids[sid] = schema
        versions = self.subjects.setdefault(subject, [])
        if sid not in versions:
            versions.append(sid)
        return sid

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_port}"

    def __enter__(self) -> SchemaRegistry:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
