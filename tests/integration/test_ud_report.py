"""`lictel report ud` end to end: checkouts through the pipeline, daily states in ClickHouse, 90-day windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Lictel

pytestmark = pytest.mark.integration

# Jan 1: pc1 is exclusively shared by ann and bob; cat roams over pc2 and pc3 (shared with dan);
# eve roams over pc4 and pc5, which fay and gus use: 7 users, vendor rule 6, optimum 5.
JAN1 = [("CORP\\Ann", "PC1"), ("bob@corp.example", "pc1"), ("cat", "PC2"), ("CAT", "pc3"), ("dan", "pc3"),
        ("eve", "pc4"), ("eve", "pc5"), ("fay", "pc4"), ("gus", "pc5")]


def _events(path: Path) -> None:
    lines = []
    seq = 0
    for day, uses in (("2026-01-01", JAN1), ("2026-04-01", [("ann", "pc1")])):
        for i, (user, host) in enumerate(uses):
            for action, minute in (("OUT", i), ("IN", i + 1)):
                seq += 1
                for feature in ("XDT_ENT_UD", "XDT_PLT_CCU"):
                    lines.append({"event_id": f"lic01:x:{seq}:{feature}", "ts": f"{day}T08:{minute:02d}:00Z",
                                  "org": "acme", "server": "lic01", "vendor": "CITRIX", "feature": feature,
                                  "action": action, "user": user, "host": host, "source": f"lic01:{feature}",
                                  "seq": seq})
    lines.sort(key=lambda e: (e["ts"], e["seq"]))
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_report_ud_windows_vendor_rule_and_optimum(lictel: Lictel, tmp_path: Path) -> None:
    path = tmp_path / "ud.jsonl"
    _events(path)
    lictel("run", "--jsonl", str(path))
    csv = lictel("report", "ud", "--format", "csv").stdout.splitlines()
    assert csv[0] == "org,feature,day,users_90d,vendor_rule,optimal"
    assert len(csv) == 1 + 91  # every day from Jan 1 to Apr 1, only the _UD feature
    assert csv[1] == "acme,XDT_ENT_UD,2026-01-01,7,6,5"
    assert csv[90] == "acme,XDT_ENT_UD,2026-03-31,7,6,5"  # Jan 1 is still inside the 90 days
    assert csv[91] == "acme,XDT_ENT_UD,2026-04-01,1,1,1"
    one = lictel("report", "ud", "--format", "csv", "--day", "2026-02-15", "--feature", "XDT_ENT_UD").stdout
    assert one.splitlines() == [csv[0], "acme,XDT_ENT_UD,2026-02-15,7,6,5"]

    explain = lictel("report", "ud", "--format", "csv", "--day", "2026-01-01", "--explain").stdout.splitlines()
    assert explain[0] == "org,feature,day,rule,license,holder"
    vendor = [line.split(",")[4:] for line in explain[1:] if ",vendor_rule," in line]
    assert vendor == [["device", "pc1"], ["user", "cat"], ["user", "dan"], ["user", "eve"], ["user", "fay"],
                      ["user", "gus"]]
    optimal = {tuple(line.split(",")[4:]) for line in explain[1:] if ",optimal," in line}
    assert len(optimal) == 5 and {("device", "pc4"), ("device", "pc5")} <= optimal

    doc = json.loads(lictel("report", "ud", "--format", "json", "--day", "2026-04-01", "--explain").stdout)
    assert doc == [{"org": "acme", "feature": "XDT_ENT_UD", "day": "2026-04-01", "users_90d": 1, "vendor_rule": 1,
                    "optimal": 1, "vendor_assignment": {"devices": [], "users": ["ann"]},
                    "optimal_assignment": {"devices": [], "users": ["ann"]}}]

    # The model comes from the name unless configured; the SQL view gives the same distinct users.
    lictel.env["LICTEL_LICENSE_MODELS"] = "XDT_PLT_CCU=ud"
    both = lictel("report", "ud", "--format", "csv", "--day", "2026-01-01").stdout.splitlines()
    assert both[1:] == ["acme,XDT_ENT_UD,2026-01-01,7,6,5", "acme,XDT_PLT_CCU,2026-01-01,7,6,5"]
    table = lictel("report", "ud", "--day", "2026-01-01", "--feature", "XDT_ENT_UD", "--explain").stdout
    assert "vendor rule 6: shared devices pc1; users cat, dan, eve, fay, gus" in " ".join(table.split())
