"""Licenses charged (DUP_GROUP) end to end through `lictel run`, `reconcile` and `export usage
--measure` (real Tansu, Faust workers and chDB)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lictel.dupgroup import DupRules
from lictel.engine import compute_rows
from lictel.events import Event, event_from_json
from lictel.export import minute_row, to_csv
from tests.integration.conftest import Lictel, reemit_and_store

pytestmark = pytest.mark.integration


def _scenario(seed: int, features: tuple[str, ...] = ("MATLAB",)) -> list[dict[str, object]]:
    """Users who open several sessions of one feature on one host (each its own checkout, some of
    two licenses), on two servers, over three hours; shuffled."""
    rng = random.Random(seed)
    lines: list[dict[str, object]] = []
    seq = {"lic01": 0, "lic02": 0}
    for server in seq:
        for u in range(14):
            user, host = f"user{u}", f"ws{u % 9}"  # some hosts are shared by two users
            for _ in range(rng.randrange(1, 5)):
                feature = rng.choice(features)
                start = rng.randrange(0, 150 * 60)
                length = rng.randrange(30, 90 * 60)
                handle = f"{rng.randrange(16**4):04x}"
                count = rng.choice([1, 1, 1, 2])
                for action, at in (("OUT", start), ("IN", start + length)):
                    seq[server] += 1
                    n = seq[server]
                    lines.append({
                        "event_id": f"{server}:c:{n}", "ts": f"2026-03-02T{8 + at // 3600:02d}:{at // 60 % 60:02d}:"
                                                              f"{at % 60:02d}Z",
                        "org": "acme", "server": server, "vendor": "MLM", "feature": feature,
                        "action": action, "user": user, "host": host, "handle": handle, "count": count,
                        "reason": None, "source": f"{server}:c", "seq": n})
    rng.shuffle(lines)
    return lines


def _export(lictel: Lictel, level: str, measure: str) -> str:
    return lictel("export", "usage", "--level", level, "--measure", measure, "--format", "csv").stdout


def test_charged_under_uh_equals_the_reference_and_checkouts_do_not_change(lictel: Lictel, tmp_path: Path) -> None:
    lines = _scenario(3)
    path = tmp_path / "matlab.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lictel("run", "--jsonl", str(path), "--workers", "2", "--dup-group", "*=UH")
    events: list[Event] = [event_from_json(x) for x in lines]
    plain = compute_rows(events)
    charged = compute_rows(events, rules=DupRules({"*": "UH"}))
    assert sum(r.charged_license_us for r in charged) < sum(r.license_us for r in charged)  # sessions share
    for level in ("pool", "estate"):
        assert _export(lictel, level, "charged") == to_csv(minute_row(r, "charged") for r in charged
                                                          if r.level == level)
        assert _export(lictel, level, "checkouts") == to_csv(minute_row(r) for r in plain if r.level == level)
    shown = lictel("entitlements", "rules", "--dup-group", "*=UH", "--format", "csv").stdout
    assert shown.splitlines() == ["org,feature,dup_group,from,note", "acme,MATLAB,UH,configuration,"]


def test_rules_come_from_license_files_and_reconcile_recharges_history(lictel: Lictel, tmp_path: Path) -> None:
    lines = _scenario(4, ("MATLAB", "SIMULINK"))
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lic = tmp_path / "mlm.lic"
    lic.write_text("SERVER lic01 ANY\nVENDOR MLM\n"
                   "INCREMENT MATLAB MLM 2026 permanent 50 DUP_GROUP=UHD SIGN=0\n"
                   "INCREMENT SIMULINK MLM 2026 permanent 20 SIGN=0\n")
    lictel("entitlements", "import", str(lic))
    rules = lictel("entitlements", "rules", "--format", "csv").stdout
    assert rules.splitlines()[1:] == ["acme,MATLAB,UHD,license file,\"UHD: display (D) is not in the logs, "
                                      "grouped by host\"", "acme,SIMULINK,NONE,default,"]
    lictel("run", "--jsonl", str(path))
    events = [event_from_json(x) for x in lines]
    from_file = compute_rows(events, rules=DupRules(licenses={"acme/MATLAB": "UHD"}))
    assert {r.dup_group for r in from_file if r.feature == "SIMULINK"} == {"NONE"}
    assert _export(lictel, "pool", "charged") == to_csv(minute_row(r, "charged") for r in from_file
                                                        if r.level == "pool")
    # A rule given now applies to the history it recomputes: SIMULINK charged per user from here on.
    lictel("reconcile", "--from", "2026-03-02T00:00:00Z", "--to", "2026-03-03T00:00:00Z",
           "--dup-group", "SIMULINK=U")
    both = compute_rows(events, rules=DupRules({"SIMULINK": "U"}, {"acme/MATLAB": "UHD"}),
                        until_us=max(e.ts for e in events) // 60_000_000 * 60_000_000 + 60_000_000)
    for level in ("pool", "estate"):
        assert _export(lictel, level, "charged") == to_csv(minute_row(r, "charged") for r in both
                                                          if r.level == level)
        assert _export(lictel, level, "checkouts") == to_csv(minute_row(r) for r in from_file if r.level == level)
    # A restarted worker emits its rows (charged under the old rule) again, and they are stored
    # again: versions come from the data, so the recharged minutes stand.
    assert reemit_and_store(lictel) > 0
    for level in ("pool", "estate"):
        assert _export(lictel, level, "charged") == to_csv(minute_row(r, "charged") for r in both
                                                          if r.level == level)
