"""Migrations on the real engine (chDB): idempotent statement by statement, run twice, brought
forward from every earlier version with data kept, the printed script equal to what `migrate`
builds; the cluster script checked statement by statement; a server behind is refused, not
migrated, by everything but `lictel db migrate`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lictel.config import Settings
from lictel.errors import WarehouseError
from lictel.warehouse import connect, ensure_schema, migrate, migration_files, pending_migrations, render, script

LATEST = migration_files()[-1][0]


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    settings = Settings(data_dir=tmp_path)
    client = connect(settings)
    try:
        yield settings, client
    finally:
        client.close()


def tables(client: Any, db: str) -> dict[str, str]:
    return {name: engine for name, engine in client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": db}).result_rows}


def test_every_statement_runs_twice_and_migrate_twice_applies_nothing(empty: tuple[Settings, Any]) -> None:
    settings, client = empty
    applied = migrate(client, settings)
    assert len(applied) == LATEST
    before = tables(client, settings.clickhouse_database)
    # A migration cut short is run again from its first statement: each must survive a repeat.
    for _, _, path in migration_files():
        for stmt in render(path, settings):
            client.command(stmt)
    assert migrate(client, settings) == []
    assert pending_migrations(client, settings) == []
    assert tables(client, settings.clickhouse_database) == before


@pytest.mark.parametrize("start", range(1, LATEST))
def test_an_older_schema_with_data_is_brought_forward(empty: tuple[Settings, Any], start: int) -> None:
    settings, client = empty
    db = settings.clickhouse_database
    assert len(migrate(client, settings, upto=start)) == start
    assert len(pending_migrations(client, settings)) == LATEST - start
    # Rows as the lictel of that schema wrote them: only the columns of the first migration.
    client.command(f"INSERT INTO {db}.raw_events (event_id, ts, org, server, vendor, feature, action, user, host, "
                   f"count, source, seq) VALUES ('e1', '2026-03-02 10:00:00', 'acme', 'lic01', 'CITRIX', 'F_UD', "
                   f"'OUT', 'DOM\\\\Ann', 'PC1', 2, 'old', 1)")
    client.command(f"INSERT INTO {db}.usage_minute (level, org, server, feature, minute, peak, low, license_us, "
                   f"checkouts, checkins, forced_releases, denials, queued, orphans, version) VALUES "
                   f"('pool', 'acme', 'lic01', 'F_UD', '2026-03-02 10:00:00', 2, 2, 120000000, 1, 0, 0, 0, 0, 0, 1)")
    assert len(migrate(client, settings)) == LATEST - start
    assert pending_migrations(client, settings) == []
    row = client.query(f"SELECT source, peak, charged_peak, charged_license_us, dup_group FROM {db}.usage_minute "
                       f"FINAL").result_rows
    assert row == [("license", 2, 2, 120000000, "NONE")]
    (users,), = client.query(f"SELECT uniqExactMerge(users) FROM {db}.ud_daily WHERE feature = 'F_UD'").result_rows
    # Events stored before 0005 are filled in by its backfill; after it, by its materialized view.
    assert users == 1
    assert migrate(client, settings) == []


def test_the_printed_script_builds_the_same_schema_and_can_be_applied_twice(tmp_path: Path) -> None:
    built: dict[str, dict[str, str]] = {}
    for way in ("migrate", "script"):
        settings = Settings(data_dir=tmp_path / way)
        client = connect(settings)
        try:
            if way == "migrate":
                migrate(client, settings)
            else:
                for _ in range(2):
                    for stmt in script(settings):
                        client.command(stmt)
                # lictel sees the schema as current: nothing pending, nothing to apply.
                assert pending_migrations(client, settings) == []
                assert migrate(client, settings) == []
            built[way] = tables(client, settings.clickhouse_database)
            built[way + " columns"] = {f"{t}.{c}": ty for t, c, ty in client.query(
                "SELECT table, name, type FROM system.columns WHERE database = 'lictel'").result_rows}
        finally:
            client.close()
    assert built["script"] == built["migrate"]
    assert built["script columns"] == built["migrate columns"]


def test_the_cluster_script_replicates_every_table_on_one_shard() -> None:
    settings = Settings(data_dir=Path("/nonexistent"))
    plain = script(settings)
    clustered = script(settings, "prod")
    assert len(plain) == len(clustered)
    assert clustered[0] == "CREATE DATABASE IF NOT EXISTS lictel ON CLUSTER prod"
    created = set()
    for stmt in clustered:
        head = " ".join(stmt.split()[:8])
        kind = re.match(r"(CREATE (?:TABLE|MATERIALIZED VIEW|VIEW|OR REPLACE VIEW|DATABASE)|ALTER TABLE|INSERT INTO)",
                        head)
        assert kind, stmt
        if kind.group(1) == "INSERT INTO":
            # Data statements run once, on the replica migrate talks to; replication carries them.
            assert "ON CLUSTER" not in stmt
            continue
        # Every DDL statement is idempotent and runs on every node of the cluster.
        assert "ON CLUSTER prod" in stmt.split("(")[0] or "ON CLUSTER prod" in head, stmt
        assert re.search(r"IF NOT EXISTS|OR REPLACE|ADD COLUMN IF NOT EXISTS|MODIFY COLUMN", stmt), stmt
        if kind.group(1) == "CREATE TABLE":
            name = re.search(r"lictel\.(\w+)", stmt).group(1)  # type: ignore[union-attr]
            engine = re.search(r"ENGINE\s*=\s*(\w+)", stmt).group(1)  # type: ignore[union-attr]
            assert engine.startswith("Replicated"), (name, engine)
            assert "Distributed" not in stmt
            created.add(name)
    # Every table lictel queries is created, replicated, by the cluster script.
    expected = {name for stmt in plain for name in re.findall(r"CREATE TABLE IF NOT EXISTS lictel\.(\w+)", stmt)}
    assert created == expected
    assert {"raw_events", "usage_minute", "usage_daily", "schema_migrations", "ud_daily", "entitlements",
            "dead_letters", "late_events", "pipeline_progress", "alerts", "vendor_samples"} <= created


def test_a_server_behind_is_refused_not_migrated(empty: tuple[Settings, Any]) -> None:
    settings, client = empty
    migrate(client, settings, upto=LATEST - 2)
    server = settings.model_copy(update={"clickhouse_url": "https://lictel:s3cret@ch.example:8443"})
    with pytest.raises(WarehouseError) as err:
        ensure_schema(client, server)
    message = str(err.value)
    assert "lictel db migrate" in message and "--cluster" in message
    assert migration_files()[-1][1] in message and "ch.example:8443" in message
    assert "s3cret" not in message
    assert len(pending_migrations(client, settings)) == 2  # nothing was applied
    # The embedded warehouse belongs to whoever opens it: it is brought forward.
    assert len(ensure_schema(client, settings)) == 2
    assert ensure_schema(client, server) == []


def test_db_migrate_print_emits_the_whole_script_and_migrate_says_where(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lictel.cli import app
    from lictel.warehouse import split_statements

    runner = CliRunner()
    printed = runner.invoke(app, ["db", "migrate", "--print", "--cluster", "prod", "--data-dir", str(tmp_path)])
    assert printed.exit_code == 0, printed.output
    assert split_statements(printed.output) == script(Settings(data_dir=tmp_path), "prod")
    assert not (tmp_path / "warehouse").exists()  # printing touches no database
    first = runner.invoke(app, ["db", "migrate", "--data-dir", str(tmp_path)])
    again = runner.invoke(app, ["db", "migrate", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and f"{LATEST:04d}_" in first.output, first.output
    assert again.exit_code == 0 and "up to date" in again.output, again.output
