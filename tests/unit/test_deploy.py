"""docker-compose.yml stays valid: it parses, and every lictel command and setting in it exists."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from lictel.cli import app
from lictel.config import Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_compose_file_names_real_commands_and_settings() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "clickhouse", "migrate", "stream", "sink"} <= set(services)
    cli = get_command(app)
    lictel_services = [s for s in services.values() if s.get("build") == "."]
    assert lictel_services
    for svc in lictel_services:
        command = svc.get("command")
        if command:
            group = cli
            for word in command:
                assert word in group.commands, f"unknown lictel command {command}"  # type: ignore[attr-defined]
                group = group.commands[word]  # type: ignore[attr-defined]
        env = svc["environment"]
        fields = {f"LICTEL_{name.upper()}" for name in Settings.model_fields}
        assert set(env) <= fields, set(env) - fields
        Settings(**{k.removeprefix("LICTEL_").lower(): v for k, v in env.items()})
    for dep in (d for s in services.values() for d in s.get("depends_on", [])):
        assert dep in services


def test_dockerfile_installs_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("lictel", "producers", "streams", "sinks", "schemas"):
        assert f"COPY {package} {package}" in text
    assert "requirements.lock" in text
