"""``lictel schemas register|check``: lictel's Avro schemas in a Confluent Schema Registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lictel.cli.common import DataDir, esc, out, settings_for

if TYPE_CHECKING:
    from lictel.serde import Registry

schemas_app = typer.Typer(no_args_is_help=True, help="lictel's message schemas in a Schema Registry.")


def _registry(data_dir: DataDir) -> tuple[Registry, dict[str, str]]:
    from lictel.errors import ConfigError
    from lictel.serde import Serde

    serde = Serde.of(settings_for(data_dir))
    if serde.registry is None:
        raise ConfigError("no LICTEL_SCHEMA_REGISTRY_URL: without a registry, messages carry their schema's "
                          "fingerprint and nothing needs registering")
    # The subject (<topic>-value) and record of every topic lictel writes.
    return serde.registry, {str(c.subject): c.name for c in serde.codecs}


@schemas_app.command("register")
def register(data_dir: DataDir = None) -> None:
    """Register this lictel's schemas under their subjects (<topic>-value). Run once per release with
    credentials that may write subjects; the registry refuses a schema incompatible with what is
    there. Writers then only look their schemas up (no auto-registration)."""
    import schemas

    registry, subjects = _registry(data_dir)
    for subject, name in subjects.items():
        sid = registry.register(subject, schemas.expanded(name))
        out.print(esc(f"{subject}: {name}, schema id {sid}"))


@schemas_app.command("check")
def check(data_dir: DataDir = None) -> None:
    """Check that every schema this lictel writes is registered (exit 1 naming those that are not)."""
    import schemas

    registry, subjects = _registry(data_dir)
    missing = []
    for subject, name in subjects.items():
        sid = registry.lookup(subject, schemas.expanded(name))
        out.print(esc(f"{subject}: {name}, " + (f"schema id {sid}" if sid is not None else "NOT registered")))
        if sid is None:
            missing.append(subject)
    if missing:
        out.print(f"[red]not registered:[/] {esc(', '.join(missing))}: run `lictel schemas register`")
        raise typer.Exit(1)


