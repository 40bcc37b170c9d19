"""The soak of bench/soak.py as a test of the long target: `lictel up` fed live for 10 minutes,
every process of lictel's flat in memory after warm-up, every minute row exact (the script checks
both and exits 1 otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1500)  # ten minutes of feeding, then the batch recompute and the exports
def test_ten_minutes_live_through_lictel_up_stay_flat_and_exact() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--no-record"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"soak failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "flat and exact" in proc.stdout
