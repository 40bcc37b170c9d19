"""Small pieces of the pages (lictel.web) that guard against a hostile input."""

from __future__ import annotations

import json

from lictel.cli.serve import loopback, tokens_of
from lictel.web import _local, script_json, sparkline


def test_the_sign_in_only_sends_back_to_this_server() -> None:
    assert _local("/feature?org=acme&feature=F") == "/feature?org=acme&feature=F"
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", ""):
        assert _local(elsewhere) == "/"


def test_page_data_cannot_end_its_script_element() -> None:
    text = str(script_json({"user": "</script><script>alert(1)</script>", "x": "a & b"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"user": "</script><script>alert(1)</script>", "x": "a & b"}


def test_sparkline() -> None:
    assert sparkline([0, 0, 0]) == ""
    path = sparkline([0, 5, 10], width=100, height=20)
    assert path.startswith("M0.0,19.0 ") and path.endswith("L100.0,1.0")


def test_tokens_and_loopback() -> None:
    assert tokens_of("0123456789abcdef, ,fedcba9876543210") == ["0123456789abcdef", "fedcba9876543210"]
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("10.0.0.5") and not loopback("lic01.corp.example")
