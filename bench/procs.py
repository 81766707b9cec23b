"""The processes a benchmark starts, and what /proc says about them.

CPU and memory come from /proc, not from wall time, so a figure is the app's
own cost however busy the rest of the machine was. Every process started here
is stopped by its own handle; nothing is looked up or killed by name.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process (all its threads), in seconds."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def cpu_of(pids: list[int]) -> dict[int, tuple[int, float]]:
    """pid -> (start time in ticks, CPU-seconds so far) of those processes still there."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        found[pid] = (int(fields[19]), (int(fields[11]) + int(fields[12])) / CLK_TCK)  # fields 22, 14 and 15
    return found


def cpu_since(before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]) -> float:
    """CPU-seconds used between two cpu_of readings. A process new since `before` counts whole;
    one that ended before `after` is not seen (a pool's backends outlive a phase)."""
    used = 0.0
    for pid, (started, cpu) in after.items():
        earlier = before.get(pid)
        used += cpu - earlier[1] if earlier and earlier[0] == started else cpu
    return used


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_ticks() -> dict[str, int]:
    """The machine-wide CPU counters of /proc/stat (all cores, in clock ticks)."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:1 + len(names)]
    return dict(zip(names, map(int, fields)))


def machine_load(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Busy and stolen shares of the machine between two readings (0..1)."""
    delta = {k: after[k] - before[k] for k in before}
    total = sum(delta.values()) or 1
    return {"busy": 1 - (delta["idle"] + delta["iowait"]) / total, "steal": delta["steal"] / total}


def process_table() -> dict[int, tuple[str, int, float]]:
    """pid -> (name, parent pid, CPU-seconds so far) of every process now (kernel threads included)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def others_cpu(before: dict, after: dict, root: int) -> dict[str, float]:
    """CPU-seconds used between two process tables outside this benchmark's own process tree.

    Postgres and Redis are counted apart: the benchmark uses them, and so may anything else.
    A process that started and ended between the two tables is not seen.
    """
    ours = {root}
    for _ in range(10):  # descendants, a few levels deep
        ours |= {pid for pid, (_name, parent, _cpu) in after.items() if parent in ours}
    used: dict[str, float] = {}
    for pid, (name, _parent, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before[pid][2] if pid in before and before[pid][0] == name else cpu
        if delta > 0:
            kind = name if name in ("postgres", "redis-server") else "other"
            used[kind] = used.get(kind, 0.0) + delta
    return used


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:")))
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }


# Starting and stopping


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:.0f}s: {tail(log)}")


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Service:
    """A long-running process of the benchmark (fake upstream, daphne), logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict, port: int, log_dir: Path):
        self.name = name
        self.port = port
        self.log = log_dir / f"{name}.log"
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, self.proc, self.log)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def start_fake_upstream(port: int, api_key: str, log_dir: Path) -> Service:
    """The fake OpenAI server, unpaced by default (a directive may pace a request)."""
    args = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--tokens", "500",
            "--delay", "0", "--api-key", api_key]
    return Service("fake-upstream", args, {**os.environ, "PYTHONUNBUFFERED": "1"}, port, log_dir)


def start_daphne(name: str, port: int, env: dict, log_dir: Path) -> Service:
    """The app as deployed: daphne through chatsite.server (its send bound costs one check per frame;
    the benchmark's clients read everything, so it drops none of them)."""
    args = [sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
    return Service(name, args, env, port, log_dir)


def start_bare_relay(name: str, port: int, env: dict, log_dir: Path) -> Service:
    """The benchmark's bare relay (bench/bare_relay.py) in plain daphne on the app's event loop,
    with the app's environment."""
    args = [sys.executable, "-m", "bench.bare_relay", "-b", "127.0.0.1", "-p", str(port)]
    return Service(name, args, env, port, log_dir)


class ClientProcess:
    """bench.clients in its own process: a spec in, JSON events out (see that module)."""

    def __init__(self, spec: dict, spec_path: Path, log: Path):
        spec_path.write_text(json.dumps(spec))
        self._log_file = open(log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.clients", str(spec_path)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, text=True,
        )
        self.log = log
        self._events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._events.put(json.loads(line))
        self._events.put(None)  # EOF

    def expect(self, event: str, timeout: float) -> dict:
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"clients sent no {event!r} within {timeout:.0f}s") from None
        if got is None or got.get("event") != event:
            raise RuntimeError(f"clients: expected {event!r}, got {got!r}: {tail(self.log)}")
        return got

    def send(self, command: str) -> None:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
