"""ClickHouse access: connect by URL, apply versioned migrations, run parameterised queries.

``LICTEL_CLICKHOUSE_URL`` unset means chDB (the ClickHouse engine in-process) in
``<data_dir>/warehouse``; chDB allows one process per data directory, so while a sink owns it,
other processes cannot open it.

Migrations are the ``sinks/migrations/NNNN_name.sql`` files, applied in order and recorded in
``<db>.schema_migrations``. Every statement is idempotent (IF NOT EXISTS, OR REPLACE, inserts into
tables that collapse repeats), so a migration cut short can simply be run again. With ``cluster``
they get ``ON CLUSTER`` and Replicated engines: one shard, every replica holding the whole history
(docs/deploy.md, "ClickHouse on a cluster", says why not Distributed tables). Only ``lictel db
migrate`` changes a ClickHouse server's schema; everything else checks it (``ensure_schema``). The
embedded warehouse belongs to the one process that opens it, which brings it up to date.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from lictel.config import Settings, safe_url
from lictel.errors import ConfigError, WarehouseError, embedded_needed
from lictel.identity import SQL_DEVICE, SQL_USER

MIGRATIONS = Path(__file__).resolve().parent.parent / "sinks" / "migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def where(settings: Settings) -> str:
    """The warehouse for messages: the server's URL without its credentials, or the chDB path."""
    if not settings.clickhouse_url:
        return f"chDB at {settings.warehouse_dir}"
    return f"{safe_url(settings.clickhouse_url)} (database {settings.clickhouse_database})"


def connect(settings: Settings) -> Client:
    """A clickhouse-connect client: HTTP(S) when a URL is set, chDB in the data dir otherwise."""
    db = settings.clickhouse_database
    if not _IDENT.match(db):
        raise ConfigError(f"LICTEL_CLICKHOUSE_DATABASE {db!r} is not a plain identifier")
    try:
        if settings.clickhouse_url:
            return clickhouse_connect.get_client(dsn=settings.clickhouse_url)
        embedded_needed("chdb", "the embedded warehouse (chDB)", "LICTEL_CLICKHOUSE_URL")
        settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{settings.warehouse_dir.resolve()}")
    except ConfigError:
        raise
    except Exception as exc:
        hint = (" (is a sink or `lictel up` running on this data dir? chDB allows one process: stop it, "
                "look through the dashboard and API it serves with `lictel up --serve-port 8787`, or query "
                "through ClickHouse)") if not settings.clickhouse_url else ""
        raise WarehouseError(f"cannot open ClickHouse ({where(settings)}): {exc}{hint}") from exc


def open_warehouse(settings: Settings) -> Client:
    """A client for reading lictel's data: the database must exist. Embedded chDB is brought to the
    current schema (what the sink would do on start); a ClickHouse server must be migrated by
    ``lictel db migrate``, never implicitly by a read."""
    if not settings.clickhouse_url and not settings.warehouse_dir.is_dir():
        # Never create a warehouse by reading: a mistyped --data-dir must say so.
        raise WarehouseError(f"no lictel data in {settings.data_dir} (there is no {settings.warehouse_dir}): check "
                             f"--data-dir / LICTEL_DATA_DIR, or run `lictel run` first")
    client = connect(settings)
    db = settings.clickhouse_database
    exists = client.query("SELECT count() FROM system.tables WHERE database = {db:String} "
                          "AND name = 'schema_migrations'", parameters={"db": db}).result_rows[0][0]
    if not exists:
        client.close()
        raise WarehouseError(f"no lictel data in {where(settings)}: run `lictel run`, or `lictel up` and a producer, "
                             f"with this --data-dir / LICTEL_CLICKHOUSE_URL first")
    try:
        ensure_schema(client, settings)
    except WarehouseError:
        client.close()
        raise
    return client


def ensure_schema(client: Client, settings: Settings) -> list[str]:
    """Make sure the schema is this lictel's: the embedded warehouse is migrated (its owner is the
    only one who can); a ClickHouse server is only checked, and a schema behind this lictel is
    refused with what to run. Returns the migrations applied (embedded only)."""
    if not settings.clickhouse_url:
        return migrate(client, settings)
    pending = pending_migrations(client, settings)
    if pending:
        raise WarehouseError(
            f"the schema in {where(settings)} is behind this lictel (pending: {', '.join(pending)}): run `lictel db "
            f"migrate` (with --cluster NAME on a ClickHouse cluster) before starting the sink or importing; "
            f"only `lictel db migrate` changes a server's schema")
    return []


def pending_migrations(client: Client, settings: Settings) -> list[str]:
    """The migrations this lictel has that the database has not recorded (all of them when the
    database or its migration table is missing)."""
    db = settings.clickhouse_database
    (exists,), = client.query("SELECT count() FROM system.tables WHERE database = {db:String} "
                              "AND name = 'schema_migrations'", parameters={"db": db}).result_rows
    done = ({r[0] for r in client.query(f"SELECT version FROM {db}.schema_migrations").result_rows}
            if exists else set())
    return [f"{number:04d}_{name}" for number, name, _ in migration_files() if number not in done]


def migration_files() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path))
    return found


def render(path: Path, settings: Settings, cluster: str | None = None) -> list[str]:
    """The statements of one migration file for this database (and cluster)."""
    if cluster is not None and not _IDENT.match(cluster):
        raise ConfigError(f"cluster name {cluster!r} is not a plain identifier")
    ttl = (f"TTL toDateTime(ts) + INTERVAL {int(settings.raw_ttl_days)} DAY"
           if settings.raw_ttl_days else "")
    values = {
        "db": settings.clickhouse_database,
        "on_cluster": f"ON CLUSTER {cluster}" if cluster else "",
        "engine_replacing": "ReplicatedReplacingMergeTree" if cluster else "ReplacingMergeTree",
        "norm_user": SQL_USER,
        "norm_device": SQL_DEVICE,
        "engine_aggregating": "ReplicatedAggregatingMergeTree" if cluster else "AggregatingMergeTree",
        "ttl": ttl,
        "dedup_setting": ("replicated_deduplication_window = 1000" if cluster
                          else "non_replicated_deduplication_window = 1000"),
    }
    return [stmt.format(**values) for stmt in split_statements(path.read_text())]


def split_statements(text: str) -> list[str]:
    """The statements of an SQL script, without comments: split at each ``;`` that is outside a
    string ('...'), a quoted identifier ("..." or `...`) and a comment (-- to the end of the line,
    /* ... */). Quotes escape by doubling or by a backslash, as in ClickHouse."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise ValueError(f"unterminated {ch} quote starting at character {i}")
            current.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"unterminated /* comment starting at character {i}")
            current.append(" ")
            i = end + 2
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def _bootstrap(settings: Settings, cluster: str | None) -> list[str]:
    """The database and the migration table. On a cluster the table is replicated, so every replica
    knows what was applied; repeated records of one version collapse."""
    db = settings.clickhouse_database
    on = f" ON CLUSTER {cluster}" if cluster else ""
    engine = "ReplicatedReplacingMergeTree" if cluster else "ReplacingMergeTree"
    return [f"CREATE DATABASE IF NOT EXISTS {db}{on}",
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} (version UInt32, name String, "
            f"applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = {engine} ORDER BY version"]


def script(settings: Settings, cluster: str | None = None) -> list[str]:
    """Every statement ``migrate`` would run on an empty server, the records of the migration table
    included: what ``lictel db migrate --print`` shows, for a DBA to review and apply by hand.
    Applying it to a schema that is partly there is harmless (every statement is idempotent)."""
    db = settings.clickhouse_database
    out = _bootstrap(settings, cluster)
    for number, name, path in migration_files():
        out.extend(render(path, settings, cluster))
        out.append(f"INSERT INTO {db}.schema_migrations (version, name) VALUES ({number}, '{name}')")
    return out


def migrate(client: Client, settings: Settings, cluster: str | None = None, upto: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered up to ``upto``, when given); return the names applied."""
    db = settings.clickhouse_database
    for stmt in _bootstrap(settings, cluster):
        client.command(stmt)
    done = {row[0] for row in client.query(f"SELECT version FROM {db}.schema_migrations").result_rows}
    applied = []
    for number, name, path in migration_files():
        if number in done or (upto is not None and number > upto):
            continue
        for stmt in render(path, settings, cluster):
            try:
                client.command(stmt)
            except Exception as exc:
                raise WarehouseError(f"migration {path.name} failed: {exc} (every statement is idempotent: "
                                     f"fix the cause and run `lictel db migrate` again)") from exc
        client.insert(f"{db}.schema_migrations", [[number, name]], column_names=["version", "name"])
        applied.append(f"{number:04d}_{name}")
    return applied


def query(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of a parameterised query (``{name:Type}`` placeholders)."""
    return [tuple(r) for r in client.query(sql, parameters=parameters or {}).result_rows]


def insert_arrow(client: Client, table: str, data: Any, settings: dict[str, int] | None = None) -> None:
    """Insert the rows of an Arrow table ``data`` (columns named as the table's) into ``table``.

    Embedded chDB reads the table where it lies in memory (its ``Python`` table function), 2-3x
    faster than the Arrow file the client writes out and the engine parses back (0.09 against 0.21 s
    for 363,046 minute rows); a ClickHouse server receives it as Arrow over HTTP."""
    handle = _embedded_handle(client)
    if handle is None:
        client.insert_arrow(table, data, settings=settings)
        return
    cols = ", ".join(f"`{name}`" for name in data.column_names)
    clause = " SETTINGS " + ", ".join(f"{k} = {int(v)}" for k, v in settings.items()) if settings else ""
    lictel_rows = data  # noqa: F841 - the engine finds the table by this name in the caller's frame
    with handle.lock:
        try:
            handle.conn.query(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(lictel_rows){clause}", "CSV")
        except Exception as exc:
            raise WarehouseError(f"cannot insert {data.num_rows:,} rows into {table}: {exc}") from exc


def _embedded_handle(client: Client) -> Any:
    """The chDB connection handle (``conn`` and the ``lock`` serialising calls on it) behind a
    client of the embedded warehouse; None for a ClickHouse server (or a client that has none)."""
    handle = getattr(getattr(client, "_backend", None), "_handle", None)
    if handle is None or getattr(handle, "conn", None) is None or not hasattr(handle, "lock"):
        return None
    return handle
