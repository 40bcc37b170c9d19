"""The deployment files stay right: docker-compose.yml as Debian's docker-compose reads it (every
anchor and merge resolved by the tool), the image and its build context, Prometheus and Grafana."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from lictel.cli import app
from lictel.config import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
ONE_SHOT = {"migrate", "producer"}  # run to completion; no health to watch


@cache
def compose() -> dict[str, Any]:
    """`docker-compose config`: the file validated and normalised by the real tool."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is needed to validate docker-compose.yml: `make compose` installs it")
    env = {**os.environ, "LICTEL_API_TOKENS": "t0ken", "KAFKA_EXTERNAL_HOST": "kafka.example.org"}
    done = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "--profile", "tools", "config"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def mounts(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, in the long or the short (source:target:mode)
    syntax, whichever the tool printed."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], str(v.get("source", "")), v["target"]))
        else:
            source, target = v.split(":")[:2]
            out.append(("bind" if source.startswith(("/", ".")) else "volume", source, target))
    return out


def lictel_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def test_compose_validates_and_names_real_commands_and_settings() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "migrate", "stream", "sink", "api", "producer", "prometheus",
            "grafana"} <= set(services)
    cli = get_command(app)
    fields = {f"LICTEL_{name.upper()}" for name in Settings.model_fields}
    for name, svc in lictel_services().items():
        words = [w for w in svc.get("command", []) if not w.startswith("-")][:2]
        group = cli
        for word in words:
            if not hasattr(group, "commands"):
                break
            assert word in group.commands, f"{name}: unknown lictel command {svc['command']}"
            group = group.commands[word]
        env = svc["environment"]
        assert set(env) <= fields, (name, set(env) - fields)
        Settings(**{k.removeprefix("LICTEL_").lower(): v for k, v in env.items()})


def test_kafka_keeps_its_log_dir_on_a_volume_and_has_an_internal_and_an_external_listener() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert ("volume", "kafka-data", env["KAFKA_LOG_DIRS"]) in mounts(kafka)
    assert "kafka-data" in compose()["volumes"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) == set(listeners) - {"CONTROLLER"} and len(advertised) >= 2
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # The services inside reach Kafka on the internal listener ...
    bootstrap = lictel_services()["sink"]["environment"]["LICTEL_KAFKA_BOOTSTRAP"]
    assert bootstrap == advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    # ... producers outside on the external one: advertised by the host's name, and published.
    external = next(v for k, v in advertised.items() if k != env["KAFKA_INTER_BROKER_LISTENER_NAME"])
    host, port = external.rsplit(":", 1)
    assert host == "kafka.example.org"
    assert any(str(p["published"]) == port and p["target"] == int(port) for p in kafka["ports"])


def test_every_long_running_service_has_a_healthcheck_and_waits_on_conditions() -> None:
    services = compose()["services"]
    image_check = "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    for name, svc in services.items():
        check = svc.get("healthcheck", {})
        off = check.get("disable") is True or check.get("test") == ["NONE"]  # the tool prints disable so
        if name in ONE_SHOT:
            assert off, f"{name} runs to completion: its image's healthcheck is off"
            continue
        assert (check and not off) or ("build" in svc and image_check), f"{name}: no healthcheck"
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in services
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert how["condition"] == want, (name, dep, how)
    assert services["sink"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "migrate"]
    # Only the migration changes the schema; it waits for a healthy ClickHouse.
    assert "clickhouse" in services["migrate"]["depends_on"]


def test_the_producer_keeps_its_follow_checkpoints_on_a_volume() -> None:
    producer = compose()["services"]["producer"]
    data = producer["environment"]["LICTEL_DATA_DIR"]
    assert any(kind == "volume" and target == data for kind, _, target in mounts(producer))


def test_prometheus_scrapes_every_component_and_grafana_has_the_dashboard() -> None:
    services = compose()["services"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    targets |= {f"{n}:{sd['port']}" for job in prom["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                for n in sd["names"]}
    for name in ("sink", "stream"):
        env = services[name]["environment"]
        assert env["LICTEL_METRICS_HOST"] == "0.0.0.0"
        assert f"{name}:{env['LICTEL_METRICS_PORT']}" in targets
    binds = {source: target for kind, source, target in mounts(services["grafana"]) if kind == "bind"}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/lictel.yml").read_text())
    assert binds[str(ROOT / "docs" / "grafana")] == provider["providers"][0]["options"]["path"]
    assert (ROOT / "docs" / "grafana" / "lictel.json").exists()
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_image_runs_unprivileged_from_pinned_bases_with_a_lean_context() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for base in re.findall(r"^FROM (\S+)", text, re.M):
        tag = base.split(":", 1)[1] if ":" in base else ""
        assert re.match(r"\d+\.\d+\.\d+", tag) or "@sha256:" in base, f"base image {base} is not an exact version"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "requirements.lock" in text and "[embedded]" not in text
    # The build context: everything ignored but what the Dockerfile copies.
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {src for args in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for src in args.split()[:-1]}
    assert copied <= allowed, copied - allowed
    assert ".venv" not in allowed and not any(a.startswith((".venv", "tests", "lictel-data")) for a in allowed)
    for package in ("lictel", "producers", "streams", "sinks", "schemas"):
        assert f"COPY {package} {package}" in text
