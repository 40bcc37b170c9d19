"""`lictel entitlements import|list` against real chDB; a re-import replaces, never duplicates."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.integration.conftest import Lictel

DATA = Path(__file__).parent.parent / "data" / "licenses"
pytestmark = pytest.mark.integration


def test_import_and_list(lictel: Lictel) -> None:
    first = lictel("entitlements", "import", str(DATA / "citrix.lic"), str(DATA / "contract.csv"), "--org", "acme")
    assert "imported 6 entitlement(s) from 2 file(s)" in first.stdout
    lictel("entitlements", "import", str(DATA / "citrix.lic"), "--org", "acme")  # again: replaces
    rows = list(csv.DictReader(io.StringIO(lictel("entitlements", "list", "--format", "csv").stdout)))
    assert len(rows) == 6
    ccu = [(r["count"], r["expiry"], r["kind"]) for r in rows if r["feature"] == "XDT_PLT_CCU"]
    assert sorted(ccu) == [("250", "2026-12-31", "contract"), ("500", "2027-05-01", "license-file")]
    assert [r["count"] for r in rows if r["feature"] == "CITRIX_STARTUP"] == ["uncounted"]
    table = lictel("entitlements", "list").stdout
    assert "citrix.lic:5" in table and "permanent" in table


def test_a_broken_license_file_is_refused_with_its_line(lictel: Lictel) -> None:
    run = lictel("entitlements", "import", str(DATA / "broken.lic"), check=False)
    assert run.returncode == 2
    assert "line 1 of" in run.stderr and "license count 'lots'" in " ".join(run.stderr.split())


def test_a_failed_reimport_changes_nothing(lictel: Lictel, tmp_path: Path) -> None:
    lic = tmp_path / "site.lic"
    lic.write_text("INCREMENT A V 1 permanent 10 SIGN=0\nINCREMENT B V 1 permanent 20 SIGN=0\n")
    lictel("entitlements", "import", str(lic))
    before = lictel("entitlements", "list", "--format", "csv").stdout
    # The same file again, now with a count storage cannot hold on its second line.
    lic.write_text("INCREMENT A V 1 permanent 11 SIGN=0\nINCREMENT B V 1 permanent 99999999999 SIGN=0\n")
    run = lictel("entitlements", "import", str(lic), check=False)
    assert run.returncode == 2 and "line 2 of" in run.stderr and "between 0 and 100,000,000" in run.stderr
    assert lictel("entitlements", "list", "--format", "csv").stdout == before
    # A good re-import with fewer lines replaces the old rows entirely.
    lic.write_text("INCREMENT A V 1 permanent 12 SIGN=0\n")
    lictel("entitlements", "import", str(lic))
    rows = list(csv.DictReader(io.StringIO(lictel("entitlements", "list", "--format", "csv").stdout)))
    assert [(r["feature"], r["count"]) for r in rows] == [("A", "12")]
