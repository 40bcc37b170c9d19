"""Resident memory and CPU of a process tree, sampled by a thread (bench/run_end_to_end.py, bench/soak.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class RssSampler(threading.Thread):
    """Samples the RSS of a process and its descendants, named by their command line."""

    def __init__(self, root: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.samples: dict[str, list[float]] = {}
        self.times: dict[str, list[float]] = {}  # time.monotonic() of each sample
        self.cpu: dict[str, float] = {}  # CPU seconds used, as last sampled
        self._halt = threading.Event()
        self.every_s = every_s

    def run(self) -> None:
        while not self._halt.is_set():
            for pid, name in self._tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    kib = int(status.split("VmRSS:")[1].split()[0])
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError, ValueError):
                    continue
                self.samples.setdefault(name, []).append(kib / 1024)
                self.times.setdefault(name, []).append(time.monotonic())
                self.cpu[name] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def _tree(self) -> list[tuple[int, str]]:
        found, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                kids = [int(k) for task in Path(f"/proc/{pid}/task").iterdir()
                        for k in (task / "children").read_text().split()]
            except OSError:
                continue
            words = [c.decode(errors="replace") for c in cmd if c]
            if "lictel.cli" in words:
                i = words.index("lictel.cli")
                rest = words[i + 1:]
                name = rest[0] if rest else "lictel"
                if "--worker-id" in rest:
                    name += "-" + rest[rest.index("--worker-id") + 1]
            else:
                name = Path(words[0]).name if words else str(pid)
            found.append((pid, name))
            todo.extend(kids)
        return found

    def summary(self) -> list[tuple[str, tuple[float, float, float]]]:
        return [(n, (v[0], max(v), v[-1])) for n, v in sorted(self.samples.items()) if v]
