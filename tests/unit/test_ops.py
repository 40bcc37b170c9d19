"""The operations endpoint (/metrics, /healthz) and the log formats every component shares."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lictel import logs, metrics
from lictel.config import Settings
from lictel.status import probe


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_healthz_answers_the_components_state_and_503_when_failing(tmp_path: Path) -> None:
    state: dict[str, Any] = {"status": "ok", "partitions": ["events-0"]}

    def health() -> dict[str, Any]:
        if state.get("boom"):
            raise RuntimeError("the client is closed")
        return dict(state)

    port = metrics.serve("opstest", lambda: {"things": 3.0}, 0, tmp_path, health=health)
    assert port is not None and (tmp_path / "metrics-opstest.port").read_text() == str(port)
    base = f"http://127.0.0.1:{port}"
    code, body = _get(base + "/healthz")
    answer = json.loads(body)
    assert code == 200 and answer["component"] == "opstest" and answer["partitions"] == ["events-0"]
    assert probe(base)["status"] == "ok"
    state.update(status="failing", reason="no poll for 75 s")
    code, body = _get(base + "/healthz")
    assert code == 503 and json.loads(body)["reason"] == "no poll for 75 s"
    assert probe(base)["status"] == "failing"
    state["boom"] = True
    code, body = _get(base + "/healthz")
    assert code == 503 and "the client is closed" in json.loads(body)["reason"]
    code, body = _get(base + "/metrics")
    assert code == 200 and b"lictel_opstest_things_total 3.0" in body
    assert _get(base + "/other")[0] == 404


def test_a_component_that_does_not_answer_is_down() -> None:
    from lictel.broker import free_port

    assert probe(f"http://127.0.0.1:{free_port()}", timeout=1)["status"] == "down"


def _record(settings: Settings, component: str, emit: Any) -> str:
    stream = io.StringIO()
    cfg = logs.config(component, settings)
    handler_cfg = cfg["handlers"]["default"]
    handler_cfg["stream"] = stream
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(cfg)
        emit(logging.getLogger("lictel.test"))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return stream.getvalue()


def test_json_logs_carry_component_level_message_extra_and_exception(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_format="json", log_level="info")

    def emit(log: logging.Logger) -> None:
        log.debug("not at INFO")
        log.info("stored %d rows", 6, extra={"partition": 3})
        try:
            raise ValueError("bad row")
        except ValueError:
            log.exception("insert failed")

    lines = _record(settings, "sink", emit).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["component"] == "sink" and first["level"] == "INFO" and first["message"] == "stored 6 rows"
    assert first["partition"] == 3 and first["logger"] == "lictel.test" and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: bad row" in second["exc"]


def test_text_logs_name_the_component_and_levels_default_per_component(tmp_path: Path) -> None:
    text = _record(Settings(data_dir=tmp_path), "producer", lambda log: log.info("following CITRIX.log"))
    assert " producer lictel.test INFO following CITRIX.log" in text
    assert logs.level(Settings(data_dir=tmp_path), "WARNING") == "WARNING"
    assert logs.level(Settings(data_dir=tmp_path, log_level="debug"), "WARNING") == "DEBUG"
    with pytest.raises(ValidationError, match="log_level"):
        Settings(data_dir=tmp_path, log_level="LOUD")
