"""Write a benchmark's results into its own section of docs/benchmarks.md, with machine and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each section is written by the script named in it (`make bench` runs them all). Numbers are from
the machine named in the section, on the date given; rerun the script to refresh its section.

Targets: one stream worker >= 50,000 events/s; the FlexNet parser >= 300,000 lines/s on one
core; `lictel run` over 1,000,000 simulated events <= 90 s end to end; the sink >= 200,000 rows/s
into chDB; every report <= 2 s over a year of minute rows (20 features x 5 servers). On the 2-core
virtual machines these run on, repeated runs vary by up to about 25%, and far more when anything
else runs at the same time (the sink measured 139,666 rows/s once while another benchmark was
still shutting down): run them one at a time on an idle machine.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}, {platform.system()}"


def record(name: str, title: str, script: str, lines: list[str]) -> None:
    """Replace (or add) the section ``name`` of docs/benchmarks.md."""
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    body = "\n".join([f"<!-- bench:{name} -->", f"## {title}", "",
                      f"`{script}` — {today}, {machine()}", "", *lines, f"<!-- /bench:{name} -->"])
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip() + "\n\n" + body + "\n"
    DOC.write_text(text)
    print("\n".join(lines))
