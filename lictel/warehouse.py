"""ClickHouse access: connect by URL, apply versioned migrations, run parameterised queries.

``LICTEL_CLICKHOUSE_URL`` unset means chDB (the ClickHouse engine in-process) in
``<data_dir>/warehouse``; chDB allows one process per data directory, so while a sink owns it,
other processes cannot open it.

Migrations are the ``sinks/migrations/NNNN_name.sql`` files, applied in order and recorded in
``<db>.schema_migrations``. With ``cluster`` they get ``ON CLUSTER`` and Replicated engines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from lictel.config import Settings
from lictel.errors import ConfigError, WarehouseError, embedded_needed
from lictel.identity import SQL_DEVICE, SQL_USER

MIGRATIONS = Path(__file__).resolve().parent.parent / "sinks" / "migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        where = settings.clickhouse_url or f"chDB at {settings.warehouse_dir}"
        hint = (" (is a sink or `lictel up` running on this data dir? chDB allows one process: stop it, "
                "look through the dashboard and API it serves with `lictel up --serve-port 8787`, or query "
                "through ClickHouse)") if not settings.clickhouse_url else ""
        raise WarehouseError(f"cannot open ClickHouse ({where}): {exc}{hint}") from exc


def open_warehouse(settings: Settings) -> Client:
    """A client for reading lictel's data: the database must exist. Embedded chDB is brought to the
    current schema (what the sink would do on start); a ClickHouse server must be migrated by
    ``lictel db migrate``, never implicitly by a read."""
    where = settings.clickhouse_url or f"chDB at {settings.warehouse_dir}"
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
        raise WarehouseError(f"no lictel data in {where} (database {db}): run `lictel run`, or `lictel up` and a "
                             f"producer, with this --data-dir / LICTEL_CLICKHOUSE_URL first")
    done = {r[0] for r in client.query(f"SELECT version FROM {db}.schema_migrations").result_rows}
    pending = [name for number, name, _ in migration_files() if number not in done]
    if pending:
        if settings.clickhouse_url:
            client.close()
            raise WarehouseError(f"the schema in {where} is older than this lictel (pending: {', '.join(pending)}): "
                                 f"run `lictel db migrate`")
        migrate(client, settings)
    return client


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
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("--"))
    return [stmt.strip().format(**values) for stmt in text.split(";") if stmt.strip()]


def migrate(client: Client, settings: Settings, cluster: str | None = None) -> list[str]:
    """Apply pending migrations; return the names applied."""
    db = settings.clickhouse_database
    on = f"ON CLUSTER {cluster}" if cluster else ""
    client.command(f"CREATE DATABASE IF NOT EXISTS {db} {on}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations {on} (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
    done = {row[0] for row in client.query(f"SELECT version FROM {db}.schema_migrations").result_rows}
    applied = []
    for number, name, path in migration_files():
        if number in done:
            continue
        for stmt in render(path, settings, cluster):
            try:
                client.command(stmt)
            except Exception as exc:
                raise WarehouseError(f"migration {path.name} failed: {exc}") from exc
        client.insert(f"{db}.schema_migrations", [[number, name]], column_names=["version", "name"])
        applied.append(f"{number:04d}_{name}")
    return applied


def query(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of a parameterised query (``{name:Type}`` placeholders)."""
    return [tuple(r) for r in client.query(sql, parameters=parameters or {}).result_rows]
