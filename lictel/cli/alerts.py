"""``lictel alerts``: check a rules file, send a test alert, list what fired (docs/alerts.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from lictel.cli.common import DataDir, Fmt, _check_format, _emit, esc, out, settings_for

alerts_app = typer.Typer(no_args_is_help=True, help="Alerts: rules evaluated on final minutes as they are "
                                                    "stored (lictel up --alerts FILE), delivered by webhook.")

RulesFile = Annotated[Path, typer.Option("--alerts", envvar="LICTEL_ALERTS_FILE", exists=True, dir_okay=False,
                                         help="The rules file (TOML).")]


@alerts_app.command("check")
def alerts_check(rules_file: RulesFile) -> None:
    """Read a rules file and list its rules, or say what is wrong and where."""
    from lictel.alerts import load

    rules = load(rules_file)
    for r in rules.rules:
        hook = rules.hook(r)
        out.print(f"{esc(r.name)}: {r.kind} (org {esc(r.org)}, feature {esc(r.feature)}) -> "
                      f"{esc(hook.url if hook else '')}")
    out.print(f"{len(rules.rules)} rule(s) in {esc(rules_file)}")


@alerts_app.command("test")
def alerts_test(rules_file: RulesFile) -> None:
    """Send a sample alert to every webhook of the rules file, with the file's retries."""
    from lictel.alerts import deliver, load, sample
    from lictel.errors import LictelError

    rules = load(rules_file)
    failed = 0
    for t in sample(rules):
        hook = rules.hook(t.rule)
        assert hook is not None
        ok, attempts, error = asyncio.run(deliver(hook, t))
        failed += not ok
        out.print(f"{esc(hook.url)}: " + ("delivered" if ok else f"[red]not delivered[/] after {attempts} "
                                                                       f"attempt(s): {esc(error)}"))
    if failed:
        raise LictelError(f"{failed} webhook(s) did not take the test alert")


@alerts_app.command("list")
def alerts_list(data_dir: DataDir = None, fmt: Fmt = "table",
                limit: Annotated[int, typer.Option(min=1, help="The newest N.")] = 100) -> None:
    """The alerts that fired and resolved, newest first, with their delivery."""
    from lictel.alerts import history
    from lictel.warehouse import open_warehouse

    _check_format(fmt)
    settings = settings_for(data_dir)
    _emit(history(open_warehouse(settings), settings.clickhouse_database, limit), fmt)
