"""A secured cluster's front door for the tests: TLS and SASL/PLAIN before a plaintext broker.

The embedded broker (Tansu 0.6) speaks plaintext without users, so the tests put this in front of
it: clients connect with TLS (a certificate signed by a CA made for the test), must authenticate
with SASL PLAIN (the Kafka SaslHandshake and SaslAuthenticate requests, answered here) before any
request but ApiVersions, and are then piped through to the broker, which advertises this front's
address. A client that skips TLS fails its handshake; one that skips SASL is disconnected at its
first request; a wrong password gets SASL_AUTHENTICATION_FAILED. What happened is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import threading
from collections import Counter
from pathlib import Path

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost (openssl): (ca, cert, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
                  "-subj", "/CN=lictel test CA"],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
                 ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                  "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", data, at)
    if n < 0:
        return None, at + 2
    return data[at + 2:at + 2 + n].decode(), at + 2 + n


def _frame(correlation: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation) + body


class SecureFront:
    """TLS + SASL/PLAIN on ``port`` in front of the plaintext broker at ``upstream`` (host, port)."""

    def __init__(self, upstream: tuple[str, int], port: int, cert: Path, key: Path, users: dict[str, str]) -> None:
        self.upstream, self.port, self.users = upstream, port, users
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(str(cert), str(key))
        self.counts: Counter[str] = Counter()  # authenticated:<user>, wrong password, no sasl, tls failed
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SecureFront:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the secure front did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(
            self._client, "127.0.0.1", self.port, ssl=self.tls, ssl_handshake_timeout=5))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    def _count(self, what: str) -> None:
        self.counts[what] += 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        pipe: asyncio.Task[None] | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            pipe = asyncio.create_task(self._pipe(up_reader, writer))
            user: str | None = None
            while True:
                head = await reader.readexactly(4)
                (size,) = struct.unpack(">i", head)
                data = await reader.readexactly(size)
                api_key, version, correlation = struct.unpack_from(">hhi", data)
                if user is not None or api_key == API_VERSIONS:
                    up_writer.write(head + data)
                    await up_writer.drain()
                elif api_key == SASL_HANDSHAKE:
                    _, at = _string(data, 8)  # client id
                    mechanism, _ = _string(data, at)
                    error = 0 if mechanism == "PLAIN" else UNSUPPORTED_SASL_MECHANISM
                    writer.write(_frame(correlation, struct.pack(">hih", error, 1, 5) + b"PLAIN"))
                elif api_key == SASL_AUTHENTICATE and version <= 1:
                    _, at = _string(data, 8)
                    (n,) = struct.unpack_from(">i", data, at)
                    _, name, password = data[at + 4:at + 4 + n].split(b"\0")
                    ok = self.users.get(name.decode()) == password.decode()
                    message = b"" if ok else b"wrong user name or password"
                    body = (struct.pack(">h", 0 if ok else SASL_AUTHENTICATION_FAILED)
                            + (struct.pack(">h", -1) if ok else struct.pack(">h", len(message)) + message)
                            + struct.pack(">i", 0) + (struct.pack(">q", 0) if version >= 1 else b""))
                    writer.write(_frame(correlation, body))
                    self._count(f"authenticated:{name.decode()}" if ok else "wrong password")
                    if ok:
                        user = name.decode()
                else:
                    self._count("no sasl")
                    return
                await writer.drain()
        except ssl.SSLError:
            self._count("tls failed")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if pipe is not None:
                pipe.cancel()
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while chunk := await reader.read(1 << 16):
                writer.write(chunk)
                await writer.drain()
