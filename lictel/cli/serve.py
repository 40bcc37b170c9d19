"""``lictel serve``: the HTTP API over the warehouse (docs/api.md)."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import threading
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn
from clickhouse_connect.driver.client import Client

from lictel.cli.common import DataDir, console, esc, settings_for
from lictel.config import Settings
from lictel.errors import ConfigError


def loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tokens_of(text: str) -> list[str]:
    """The tokens of ``LICTEL_API_TOKENS`` (comma-separated; blanks ignored); a token shorter than 16
    characters is refused, as one a client could guess."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    short = [k for k, t in enumerate(tokens, 1) if len(t) < 16]
    if short:
        raise ConfigError(f"LICTEL_API_TOKENS: token(s) {', '.join(map(str, short))} are shorter than 16 "
                          "characters; make them long and random, e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe())'`")
    return tokens


def api_tokens(settings: Settings, host: str, no_auth: bool) -> list[str]:
    """The tokens to require, after the checks: none only with ``no_auth`` on a loopback address."""
    tokens = tokens_of(settings.api_tokens.get_secret_value())
    if no_auth and not loopback(host):
        raise ConfigError(f"--no-auth answers anyone who can reach {host}: it is allowed on a loopback address only "
                          "(127.0.0.1, ::1, localhost); set LICTEL_API_TOKENS to serve other machines")
    if not tokens and not no_auth:
        raise ConfigError("no API tokens: set LICTEL_API_TOKENS (comma-separated, at least 16 characters each), or "
                          "give --no-auth to serve this machine only")
    return [] if no_auth else tokens


class _Server(uvicorn.Server):
    """A uvicorn server inside a process that handles its own signals (the sink)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(client: Client, settings: Settings, lock: threading.Lock | None = None) -> uvicorn.Server:
    """The dashboard and API over ``client`` on ``settings.serve_host:serve_port``, for the process that
    owns the warehouse: run ``serve()`` as a task, set ``should_exit`` to stop it."""
    from lictel.api import Warehouse, create_app

    assert settings.serve_port is not None
    tokens = api_tokens(settings, settings.serve_host, settings.serve_no_auth)
    app = create_app(Warehouse(client, settings, lock), tokens)
    return _Server(uvicorn.Config(app, host=settings.serve_host, port=settings.serve_port, log_config=None,
                                  access_log=False))


def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8787,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Answer without a token (only on a loopback "
                                                            "address).")] = False,
) -> None:
    """Serve the dashboard and the stored figures over HTTP: pages at /, JSON and CSV under /api/v1,
    OpenAPI at /docs.

    Every /api route needs 'Authorization: Bearer TOKEN' with a token of LICTEL_API_TOKENS. While
    `lictel up` runs on this data dir, it serves instead: `lictel up --serve-port 8787`."""
    from lictel import logs
    from lictel.api import Warehouse, create_app
    from lictel.warehouse import open_warehouse, where

    settings = settings_for(data_dir)
    logs.setup("api", settings)
    tokens = api_tokens(settings, host, no_auth)
    client = open_warehouse(settings)
    app = create_app(Warehouse(client, settings), tokens)
    # log_config=None: uvicorn's lines go through lictel's logging (LICTEL_LOG_FORMAT, LICTEL_LOG_LEVEL).
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    auth = "no authentication (loopback only)" if no_auth else f"{len(tokens)} token(s)"
    console.print(f"lictel on http://{esc(host)}:{port} over {esc(where(settings))}, {auth}; API under /api/v1, "
                  "OpenAPI at /docs; Ctrl-C stops it")
    # What is loaded by now (the libraries, the app) lives as long as the process: keep it out of the
    # collector's passes, which otherwise walk it during answers that allocate much (a large report).
    gc.collect()
    gc.freeze()
    try:
        server.run()
    finally:
        client.close()
