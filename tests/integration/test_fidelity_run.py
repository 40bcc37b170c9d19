"""Counting what the license server counts, end to end through `lictel run` (real Tansu, Faust
workers and chDB): restarts without a user, rereads, a repeated block, a log without a zone."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lictel.engine import compute_rows
from lictel.events import Event, event_from_json
from lictel.export import minute_row, to_csv
from producers.flexnet import FlexnetParser, render
from producers.simulate import SimSpec, simulate
from tests.integration.conftest import Lictel
from tests.unit.test_flexnet_fidelity import _with_rereads

pytestmark = pytest.mark.integration


def _line(i: int, ts: str, action: str, user: str | None, host: str | None, feature: str | None,
          server: str = "lic01") -> dict[str, object]:
    return {"event_id": f"{server}:t:{i}", "ts": ts, "org": "acme", "server": server, "vendor": "CITRIX",
            "feature": feature, "action": action, "user": user, "host": host, "handle": None, "count": 1,
            "reason": None, "source": f"{server}:t", "seq": i}


def test_restarts_without_user_host_or_feature_release_licenses(lictel: Lictel, tmp_path: Path) -> None:
    rng = random.Random(5)
    lines: list[dict[str, object]] = []
    seq = 0
    for hour in range(6):
        for server in ("lic01", "lic02"):
            for u in range(rng.randrange(3, 8)):
                seq += 1
                lines.append(_line(seq, f"2026-03-02T{8 + hour:02d}:{u * 3:02d}:10Z", "OUT", f"u{u}", f"h{u}",
                                   "XDT_PLT_CCU", server))
            seq += 1
            # The daemon restarts: a restart has no user, host or feature (null, as some exporters write).
            lines.append(_line(seq, f"2026-03-02T{8 + hour:02d}:40:00Z", "RESTART", None, None, None, server))
    rng.shuffle(lines)  # arrival order must not matter
    path = tmp_path / "restarts.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = lictel("run", "--jsonl", str(path), "--workers", "2")
    assert "0 bad input line(s) dead-lettered" in " ".join(run.stderr.split())
    events = [event_from_json(x) for x in lines]
    want = compute_rows(events)
    for level in ("pool", "estate"):
        exported = lictel("export", "usage", "--level", level, "--format", "csv").stdout
        assert exported == to_csv(minute_row(r) for r in want if r.level == level)
    released = sum(r.forced_releases for r in want if r.level == "pool")
    assert released == sum(1 for x in lines if x["action"] == "OUT")  # every checkout ended by a restart


def test_a_log_with_rereads_and_a_repeated_block_stores_the_rows_without_them(lictel: Lictel, tmp_path: Path) -> None:
    spec = SimSpec(users=120, servers=1, days=2, seed=11, restart_rate=0.0)
    base = list(render(list(simulate(spec)), "UTC"))
    clean = tmp_path / "clean.log"
    clean.write_text("\n".join(base) + "\n")
    noisy = _with_rereads(base, random.Random(2))
    a = len(noisy) // 3
    noisy = noisy[:a + 250] + noisy[a:a + 250] + noisy[a + 250:]
    log = tmp_path / "CITRIX.log"
    log.write_text("\n".join(noisy) + "\n")
    run = lictel("run", "--flexnet", str(log), "--server", "lic-fra", "--org", spec.org, "--tz", "UTC")
    err = " ".join(run.stderr.split())
    assert "license reread(s) (checkouts kept)" in err and f"lines {a + 251}-" in err and "late event" not in err
    p = FlexnetParser(org=spec.org, server="lic-fra", tz="UTC")
    want = compute_rows([i for i in p.parse(base, "clean.log") if isinstance(i, Event)])
    for level in ("pool", "estate"):
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == \
            to_csv(minute_row(r) for r in want if r.level == level)


def test_a_log_that_names_no_zone_is_refused_before_anything_is_sent(lictel: Lictel, tmp_path: Path) -> None:
    log = tmp_path / "CITRIX.log"
    log.write_text(" 8:00:00 (lmgrd) TIMESTAMP 3/2/2026\n 9:00:00 (CITRIX) OUT: \"F\" u@h\n")
    run = lictel("run", "--flexnet", str(log), "--server", "lic01", check=False)
    assert run.returncode == 2
    assert "CITRIX.log: the log does not name its time zone; give --tz ZONE" in " ".join(run.stderr.split())
    named = tmp_path / "named.log"
    named.write_text(" 8:00:00 (lmgrd) Server's System Date and Time: Mon Mar 02 2026 08:00:00 Eastern Standard "
                     "Time\n 8:00:00 (lmgrd) TIMESTAMP 3/2/2026\n 9:00:00 (CITRIX) OUT: \"F\" u@h\n")
    run = lictel("run", "--flexnet", str(named), "--server", "lic01")
    assert "time zone America/New_York (from the log: 'Eastern Standard Time'" in " ".join(run.stderr.split())
    first = lictel("export", "usage", "--level", "pool", "--format", "csv").stdout.splitlines()[1]
    assert "2026-03-02T14:00:00Z" in first  # 09:00 in New York


CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "flexnet"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/flexnet is not beside this checkout")
@pytest.mark.parametrize("name,tz", [("ImSukh__FlexLM-Log-Parser__debug.log", None),
                                     ("talestk__log_parser__dj.log", "America/New_York")], ids=["ImSukh", "dj"])
def test_a_real_log_with_a_block_pasted_again_stores_the_rows_of_the_log(lictel: Lictel, tmp_path: Path,
                                                                          name: str, tz: str | None) -> None:
    # A real log, and the same log with a stretch of 600 lines pasted again after itself, through two
    # stream workers: the stored rows are those of the real log. ImSukh names its zone; dj has rereads.
    lines = (CORPUS / name).read_text(encoding="utf-8", errors="replace").splitlines()
    a = len(lines) // 2
    damaged = tmp_path / name
    damaged.write_text("\n".join(lines[:a + 600] + lines[a:a + 600] + lines[a + 600:]) + "\n")
    zone = ["--tz", tz] if tz else []
    run = lictel("run", "--flexnet", str(damaged), "--server", "lic01", "--org", "acme", "--workers", "2", *zone)
    err = " ".join(run.stderr.split())
    assert "repeat lines" in err and "late event" not in err
    p = FlexnetParser(org="acme", server="lic01", tz=tz)
    want = compute_rows([i for i in p.parse(lines, name) if isinstance(i, Event)])
    assert p.tz is not None
    for level in ("pool", "estate"):
        assert lictel("export", "usage", "--level", level, "--format", "csv").stdout == \
            to_csv(minute_row(r) for r in want if r.level == level)
