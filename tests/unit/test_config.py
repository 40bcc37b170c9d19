"""Consumer-group timing: right for the embedded broker and for Kafka, overridable, checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lictel.config import Settings, group_options


def test_embedded_broker_gets_dynamic_members_and_a_10_s_session() -> None:
    s = Settings().with_group_defaults()
    assert (s.group_session_timeout_s, s.group_heartbeat_s, s.group_static) == (10.0, 1.0, False)
    assert group_options(Settings()) == {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1_000}


def test_kafka_gets_static_members_and_its_default_session() -> None:
    s = Settings(kafka_bootstrap="kafka1:9092").with_group_defaults()
    assert (s.group_session_timeout_s, s.group_heartbeat_s, s.group_static) == (45.0, 3.0, True)


def test_settings_given_win_and_the_rest_is_filled_in() -> None:
    s = Settings(kafka_bootstrap="kafka1:9092", group_session_timeout_s=20, group_static=False).with_group_defaults()
    assert (s.group_session_timeout_s, s.group_heartbeat_s, s.group_static) == (20.0, 3.0, False)
    # Filled in once, a child process started with these settings keeps them whatever its bootstrap.
    again = s.model_copy(update={"kafka_bootstrap": None}).with_group_defaults()
    assert (again.group_session_timeout_s, again.group_static) == (20.0, False)


def test_a_heartbeat_over_a_third_of_the_session_is_refused() -> None:
    with pytest.raises(ValidationError, match="under a third"):
        Settings(group_session_timeout_s=10, group_heartbeat_s=4)
    with pytest.raises(ValidationError):
        Settings(group_session_timeout_s=3)
