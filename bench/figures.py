"""The runs' phases grouped into the report's rows: per N and pace, per relay, over the runs.

A phase (bench.relay.phase_figures) is one mode at one N in one run: "relay" (the app),
"bare" (bench/bare_relay.py) or "direct" (httpx reading the fake itself). The report
shows medians over runs for per-run figures (tokens/s, CPU per token) and percentiles
of the pooled replies for per-reply ones (added time to first token, update gaps).
"""

from __future__ import annotations

import statistics

MODES = ("relay", "direct", "bare")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_or_none(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread_percent(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def rows_by_n(results: dict, delay_is_zero: bool) -> dict[int, dict[str, list[dict]]]:
    """{N: {"relay": [phase per run], "direct": [...], "bare": [...]}} for unpaced or paced phases."""
    grouped: dict[int, dict[str, list[dict]]] = {}
    for run in results.get("runs", []):
        for phase in run["phases"]:
            if (phase["delay"] == 0) != delay_is_zero:
                continue
            grouped.setdefault(phase["n"], {mode: [] for mode in MODES})[phase["mode"]].append(phase)
    return dict(sorted(grouped.items()))


def ratios(relay: list[dict], direct: list[dict]) -> list[float]:
    """relay ÷ direct of the same run (phases are in run order; a run measures both or neither)."""
    return [r["tok_per_s"] / d["tok_per_s"] for r, d in zip(relay, direct) if r["tok_per_s"] and d["tok_per_s"]]


def pooled(phases: list[dict], key: str) -> list[float]:
    return [value for phase in phases for value in phase.get(key) or []]


def stores(phase: dict) -> float | None:
    """Postgres + Redis CPU-ms per token of one phase (None where it did not hold)."""
    pg, rd = phase.get("postgres_cpu_ms_per_token"), phase.get("redis_cpu_ms_per_token")
    return None if pg is None or rd is None else pg + rd


def side(phases: list[dict]) -> dict:
    """One relay's (or the direct baseline's) figures over the runs of one row."""
    per_run = lambda key: [p.get(key) for p in phases]  # noqa: E731
    return {
        "tps": per_run("tok_per_s"),
        "cpu": per_run("cpu_ms_per_token"),
        "redis": per_run("redis_cpu_ms_per_token"),
        "postgres": per_run("postgres_cpu_ms_per_token"),
        "stores": [stores(p) for p in phases],
        "fake": per_run("fake_cpu_ms_per_token"),
        "to_upstream": pooled(phases, "to_upstream_ms"),
        "after_upstream": pooled(phases, "after_upstream_ms"),
        "added": pooled(phases, "added_ms"),
        "gap": pooled(phases, "gap_ms"),
        "deltas": per_run("deltas_per_reply"),
        "client_cpu": [p["client_cpu_s"] * 1000 / p["tokens_delivered"] for p in phases
                       if p.get("client_cpu_s") is not None and p["tokens_delivered"]],
        "ok": sum(p["ok"] for p in phases), "total": sum(p["n"] for p in phases),
    }


EMPTY = side([])


def main_figures(results: dict, delay_is_zero: bool) -> dict[int, dict]:
    """Per N: {"tokens", "ratio", and a side() per mode that ran}."""
    figures = {}
    for n, group in rows_by_n(results, delay_is_zero).items():
        first = next(p for mode in MODES for p in group[mode])
        row = {"tokens": first["tokens"], "ratio": ratios(group["relay"], group["direct"])}
        row.update({mode: side(group[mode]) for mode in MODES if group[mode]})
        figures[n] = row
    return figures


def mode(row: dict, name: str) -> dict:
    """A row's figures of one mode, empty when that mode did not run at this N."""
    return row.get(name, EMPTY)
