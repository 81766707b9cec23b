"""How long a burst of upstream requests waits on the connection pool: httpcore's pool vs ours.

    .venv/bin/python -m bench.pool [--n 100] [--rounds 5]

Starts the fake upstream (tests/fake_upstream.py) as its own process, then, in rounds that
alternate which pool goes first: a client with the upstream client's limits and the SSRF
guard (netguard.GuardedTransport) sends N short requests at once to fill its pool with N idle
connections, then N paced streams at once (50 chunks, 20 ms apart). Per stream, the time from
the burst's start to the fake having read the request (its `received_at`) and to the first
body bytes at the client; and this process's CPU over the burst. Medians over the rounds.
The same client once with httpcore's AsyncConnectionPool in place of upstream/pool.py's
LinearPool. About a minute on 2 cores; uses no database and no Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import resource
import statistics
import subprocess
import sys
import time

import httpcore
import httpx

from bench.procs import free_port
from conversations.upstream import netguard

LIMITS = {"max_connections": 2000, "max_keepalive_connections": 200, "keepalive_expiry": 60}  # as client.py
LOOPBACK = netguard.Policy(networks=((ipaddress.ip_network("127.0.0.1/32"), None),))
KINDS = ("httpcore", "linear")


def make_client(kind: str) -> httpx.AsyncClient:
    backend = netguard.GuardedBackend(policy=lambda: LOOPBACK)
    transport = netguard.GuardedTransport(limits=httpx.Limits(**LIMITS), backend=backend)
    if kind == "httpcore":
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=backend, **LIMITS)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30.0))


def body(text: str, directive: dict) -> dict:
    return {"model": "fake-model", "stream": True,
            "messages": [{"role": "user", "content": f"{text} fake:{json.dumps(directive)}"}]}


async def stream(client: httpx.AsyncClient, url: str, text: str, directive: dict, started: float) -> float:
    """One request read to its end; the seconds from `started` to its first body bytes."""
    first = None
    async with client.stream("POST", url, json=body(text, directive)) as response:
        async for _ in response.aiter_raw():
            if first is None:
                first = time.perf_counter() - started
    return first


async def burst(client: httpx.AsyncClient, base: str, n: int, directive: dict) -> dict:
    async with httpx.AsyncClient() as side:
        await side.post(f"{base}/_fake/reset")
    wall, started = time.time(), time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    firsts = await asyncio.gather(*(stream(client, f"{base}/v1/chat/completions", f"q{i}", directive, started)
                                     for i in range(n)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    async with httpx.AsyncClient() as side:
        records = (await side.get(f"{base}/_fake/requests")).json()
    return {"first": sorted(firsts), "sent": sorted(r["received_at"] - wall for r in records),
            "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime}


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def run(n: int, rounds: int) -> dict[str, list[dict]]:
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    try:
        fake.stdout.readline()  # "listening"
        base = f"http://127.0.0.1:{port}"
        for round_ in range(rounds):
            for kind in KINDS if round_ % 2 == 0 else reversed(KINDS):
                async with make_client(kind) as client:
                    await burst(client, base, n, {"tokens": 2})  # n idle connections
                    results[kind].append(await burst(client, base, n, {"tokens": 50, "delay": 0.02}))
    finally:
        fake.terminate()
        fake.wait()
    return results


def report(results: dict[str, list[dict]], n: int) -> str:
    lines = [f"{n} paced streams at once through a warm pool, medians over {len(results[KINDS[0]])} rounds:",
             "| pool | send → upstream p50 / p99 | to first bytes p50 / p99 | this process's CPU per burst |",
             "|---|---|---|---|"]
    for kind in KINDS:
        runs = results[kind]

        def ms(key: str, p: float, runs=runs) -> float:
            return statistics.median(percentile(r[key], p) for r in runs) * 1000

        cpu = statistics.median(r["cpu"] for r in runs) * 1000
        name = "httpcore's AsyncConnectionPool" if kind == "httpcore" else "LinearPool (upstream/pool.py)"
        lines.append(f"| {name} | {ms('sent', 50):,.0f} / {ms('sent', 99):,.0f} ms "
                     f"| {ms('first', 50):,.0f} / {ms('first', 99):,.0f} ms | {cpu:,.0f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="requests at once (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each pool once per round (default 5)")
    args = parser.parse_args(argv)
    print(report(asyncio.run(run(args.n, args.rounds)), args.n))


if __name__ == "__main__":
    main()
