"""py-spy profiles of the app during a phase, and what their samples say.

The raw samples are kept as collapsed stacks (one `frame;frame;... count` line per
stack, the format flamegraph.pl, speedscope and inferno read), beside the figures
under bench/results/; the report summarises them (report.profile_section).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RATE_HZ = 200  # samples per second; --nonblocking, so the app is never paused for them


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


class Recorder:
    """py-spy attached to one process from `start()` to `stop()`; the samples go to `raw`."""

    def __init__(self, executable: str, pid: int, raw: Path, log: Path):
        self.executable, self.pid, self.raw, self.log = executable, pid, raw, log
        self.proc: subprocess.Popen | None = None
        self.seconds: float | None = None
        self._started = 0.0

    def start(self) -> None:
        self.raw.unlink(missing_ok=True)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [self.executable, "record", "--pid", str(self.pid), "--rate", str(RATE_HZ), "--format", "raw",
                 "--nolineno", "--nonblocking", "--output", str(self.raw)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        time.sleep(0.5)  # attached before the replies start
        self._started = time.monotonic()

    def stop(self) -> None:
        """Once: a second Ctrl-C could cut py-spy short while it writes its file."""
        if self.proc is None or self.seconds is not None:
            return
        self.seconds = time.monotonic() - self._started
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C

    def wait(self, timeout: float = 30.0) -> None:
        """Until py-spy has written its file; killed if it does not."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def samples(self) -> str:
        return self.raw.read_text() if self.raw.exists() else ""


def _package(frame: str) -> str:
    """'send (channels_redis/core.py)' -> 'channels_redis'; a stdlib module keeps its name."""
    if "(" not in frame:
        return frame
    path = frame.rsplit("(", 1)[1].rstrip(")")
    first = path.split("/", 1)[0]
    return first.removesuffix(".py")


def summary(raw: str) -> dict:
    """Self and inclusive shares from py-spy's raw (collapsed stacks) output."""
    leaf: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        leaf[frames[-1]] += samples
        packages[_package(frames[-1])] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    share = lambda counter: [(name, 100 * n / total) for name, n in counter.most_common()]  # noqa: E731
    app = Counter({f: n for f, n in inclusive.items() if "(conversations/" in f})
    return {"samples": total, "self": share(leaf)[:25], "packages": share(packages)[:15], "app_total": share(app)[:15]}
