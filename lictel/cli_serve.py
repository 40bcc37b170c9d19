"""``lictel serve``: the HTTP API over the warehouse (docs/api.md)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated

import typer

from lictel.cli_common import DataDir, console, esc, settings_for
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


def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8787,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Answer without a token (only on a loopback "
                                                            "address).")] = False,
) -> None:
    """Serve the stored figures over HTTP: JSON and CSV under /api/v1, OpenAPI at /docs.

    Every /api route needs 'Authorization: Bearer TOKEN' with a token of LICTEL_API_TOKENS."""
    import uvicorn

    from lictel.api import Warehouse, create_app
    from lictel.warehouse import open_warehouse

    settings = settings_for(data_dir)
    tokens = tokens_of(settings.api_tokens.get_secret_value())
    if no_auth and not loopback(host):
        raise ConfigError(f"--no-auth answers anyone who can reach {host}: it is allowed on a loopback address only "
                          "(127.0.0.1, ::1, localhost); set LICTEL_API_TOKENS to serve other machines")
    if not tokens and not no_auth:
        raise ConfigError("no API tokens: set LICTEL_API_TOKENS (comma-separated, at least 16 characters each), or "
                          "give --no-auth to serve this machine only")
    if no_auth:
        tokens = []
    client = open_warehouse(settings)
    app = create_app(Warehouse(client, settings), tokens)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    where = settings.clickhouse_url or f"chDB at {settings.warehouse_dir}"
    auth = "no authentication (loopback only)" if no_auth else f"{len(tokens)} token(s)"
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    console.print(f"lictel API on {esc(host)}:{port} over {esc(where)}, {auth}; OpenAPI at /docs; Ctrl-C stops it")
    try:
        server.run()
    finally:
        client.close()
