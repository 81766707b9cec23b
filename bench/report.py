"""Tables from bench.relay's results: medians over runs, with their spread, beside the targets.

The same markdown is printed at the end of a run, saved in bench/results/latest.md,
and (with --docs) put between the markers of docs/benchmarks.md, whose other text
(the reading of the figures) is written by hand and left alone.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

BEGIN = "<!-- bench.relay: generated, begin -->"
END = "<!-- bench.relay: generated, end -->"

TARGETS = {
    "ratio": 0.5,  # relay tokens/s ÷ direct at N=100
    "cpu_ms_per_token": 0.05,
    "ttft_p50_ms": 5.0,
    "ttft_p99_ms": 30.0,
    "writes_per_reply": 2.0,  # plus one per second of streaming
    "context_queries": 3,
    "idle_kb": 50.0,
    "bytes_ratio": 2.0,  # from DESIGN.md: bytes sent per reply ≤ 2× the reply
}


# Numbers


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def spread_cell(values: list[float], digits: int = 0) -> str:
    """Median of the runs, and their range when there is more than one."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    median = statistics.median(values)
    if len(values) == 1:
        return num(median, digits)
    return f"{num(median, digits)} ({num(min(values), digits)}–{num(max(values), digits)})"


def held_cell(values: list[float | None], digits: int = 0) -> str:
    """Like spread_cell; a run whose replies did not all arrive has no figure, and says so."""
    missing = sum(v is None for v in values)
    if values and missing == len(values):
        return "did not hold"
    cell = spread_cell(values, digits)
    return cell if not missing else f"{cell}; {missing} run(s) did not hold"


def median_or_none(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread_percent(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table padded to line up in a terminal too."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


# Grouping the runs


def rows_by_n(results: dict, delay_is_zero: bool) -> dict[int, dict[str, list[dict]]]:
    """{N: {"relay": [phase per run], "direct": [...]}} for unpaced or paced phases."""
    grouped: dict[int, dict[str, list[dict]]] = {}
    for run in results.get("runs", []):
        for phase in run["phases"]:
            if (phase["delay"] == 0) != delay_is_zero:
                continue
            grouped.setdefault(phase["n"], {"relay": [], "direct": []})[phase["mode"]].append(phase)
    return dict(sorted(grouped.items()))


def ratios(group: dict[str, list[dict]]) -> list[float]:
    """relay ÷ direct of the same run (phases are in run order)."""
    return [
        r["tok_per_s"] / d["tok_per_s"]
        for r, d in zip(group["relay"], group["direct"])
        if r["tok_per_s"] and d["tok_per_s"]
    ]


def pooled(phases: list[dict], key: str) -> list[float]:
    return [value for phase in phases for value in phase[key]]


def main_figures(results: dict, delay_is_zero: bool) -> dict[int, dict]:
    """Per N: the figures of the main and paced tables, over all runs."""
    figures = {}
    for n, group in rows_by_n(results, delay_is_zero).items():
        relay, direct = group["relay"], group["direct"]
        ttft = pooled(relay, "ttft_ms")
        figures[n] = {
            "tokens": (relay or direct)[0]["tokens"],
            "direct_tps": [p["tok_per_s"] for p in direct],
            "relay_tps": [p["tok_per_s"] for p in relay],
            "ratio": ratios(group),
            "cpu": [p.get("cpu_ms_per_token") for p in relay],
            "redis_cpu": [p.get("redis_cpu_ms_per_token") for p in relay],
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99), "ttft_count": len(ttft),
            "direct_ttft_p50": percentile(pooled(direct, "ttft_ms"), 50),
            "deltas": [p["deltas_per_reply"] for p in relay],
            "bytes": [p["bytes_per_reply"] for p in relay],
            "reply_chars": [p["reply_chars"] for p in relay],
            "ok": sum(p["ok"] for p in relay), "total": sum(p["n"] for p in relay),
            "client_cpu_relay": [p["client_cpu_s"] * 1000 / p["tokens_delivered"] for p in relay if p["tokens_delivered"]],
            "client_cpu_direct": [p["client_cpu_s"] * 1000 / p["tokens_delivered"] for p in direct if p["tokens_delivered"]],
        }
    return figures


# Sections


def header(results: dict) -> str:
    m = results["machine"]
    load = m.get("load", {})
    settings = ", ".join(f"{name} {value}" for name, value in results.get("settings", {}).items())
    code = results.get("code", {})
    changed = code.get("changed") or []
    version = f"commit `{code.get('commit', '?')}`" + (
        f" with uncommitted changes to {', '.join(f'`{c}`' for c in changed)}" if changed else "")
    lines = [
        f"Command: `{results['command']}` (`make bench` runs `python -m bench.relay`), "
        f"{results['elapsed_s']:.0f} s in all, {results['date']}.",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, Postgres {m.get('postgres', '?')}, Redis {m.get('redis', '?')}. "
        f"During the benchmark the machine was {100 * load.get('busy', 0):.0f}% busy "
        f"with {100 * load.get('steal', 0):.1f}% of CPU time stolen by the hypervisor.",
        "",
        f"Code: {version}. App settings: {settings}. Every process on loopback: daphne (the app), the fake upstream, "
        "the clients' process, Postgres and Redis share the same cores.",
    ]
    return "\n".join(lines)


def throughput_section(results: dict, delay_is_zero: bool) -> str:
    figures = main_figures(results, delay_is_zero)
    if not figures:
        return ""
    runs = len(results.get("runs", []))
    tokens = next(iter(figures.values()))["tokens"]
    if delay_is_zero:
        title = f"### Relay, unpaced upstream (M = {tokens} tokens per reply; median of {runs} runs, range in brackets)"
    else:
        title = (f"### Relay, paced upstream: 50 tokens/s per stream (M = {tokens}, not 500, to keep a reply "
                 f"at 5 s; median of {runs} runs)")
    headers = ["N", "direct tok/s", "relay tok/s", "relay ÷ direct (≥ 0.5 at N=100)",
               "app CPU-ms per token (≤ 0.05)", "Redis CPU-ms per token", "added TTFT p50 / p99 ms (≤ 5 / ≤ 30 at N=100)",
               "direct TTFT p50 ms", "deltas per reply", "clients' CPU-ms per token, relay / direct", "replies ok"]
    rows = []
    for n, f in figures.items():
        rows.append([
            str(n), spread_cell(f["direct_tps"]), held_cell(f["relay_tps"]), held_cell(f["ratio"], 2),
            held_cell(f["cpu"], 3), held_cell(f["redis_cpu"], 3), f"{num(f['ttft_p50'], 1)} / {num(f['ttft_p99'], 1)}",
            num(f["direct_ttft_p50"], 2), spread_cell(f["deltas"], 1),
            f"{num(median_or_none(f['client_cpu_relay']), 3)} / {num(median_or_none(f['client_cpu_direct']), 3)}",
            f"{f['ok']}/{f['total']}",
        ])
    notes = [
        "",
        "TTFT percentiles pool every reply of every run whose first delta arrived (first delta at the "
        "client minus the fake's `first_chunk_at`); the direct column is the same difference for httpx reading the fake itself. "
        "The clients' CPU is that of the separate client process: for the direct baseline it is what "
        "reading and parsing the SSE stream with httpx + httpx-sse costs in Python, the floor of the "
        "app's own upstream side. Redis CPU is the Redis server's (INFO cpu) over the same window: "
        "channels-redis moves part of each delta's cost there.",
    ]
    return "\n".join([title, "", table(headers, rows)] + notes)


def noise_section(results: dict) -> str:
    figures = main_figures(results, True)
    runs = results.get("runs", [])
    if len(runs) < 2:
        return "### Noise\n\nOne run only: no spread to report."
    rows = []
    for n, f in figures.items():
        rows.append([str(n), num(spread_percent(f["direct_tps"])), num(spread_percent(f["relay_tps"])),
                     num(spread_percent(f["ratio"])), num(spread_percent(f["cpu"]))])
    machine = "; ".join(f"run {r['run']}: {run_load(r['machine'])}" for r in runs)
    return "\n".join([
        "### Noise: spread across runs, (max − min) ÷ median, %",
        "",
        table(["N", "direct tok/s", "relay tok/s", "ratio", "CPU per token"], rows),
        "",
        f"Machine during each run: {machine}. Postgres and Redis serve the benchmark; anything else "
        "on the machine competes with it and widens the spread.",
    ])


def run_load(m: dict) -> str:
    """How busy the machine was in one run, and how much of that was not the benchmark."""
    text = f"{100 * m['busy']:.0f}% busy, {100 * m['steal']:.1f}% stolen"
    others = m.get("others_cpu_s")
    if others is not None and m.get("seconds"):
        cores = m.get("cores") or 2
        share = 100 * others.get("other", 0.0) / (m["seconds"] * cores)
        text += (f", processes outside the benchmark {others.get('other', 0.0):.1f} CPU-s "
                 f"({share:.0f}% of the machine; Postgres {others.get('postgres', 0.0):.1f}, "
                 f"Redis {others.get('redis-server', 0.0):.1f} CPU-s)")
    return text


def wire_section(results: dict) -> str:
    rows = []
    for f in results.get("wire", []):
        db = f.get("db_per_reply", {})
        writes = sum(db.get(f"{table}_{kind}", 0) for table in ("message", "conversation", "usage")
                     for kind in ("ins", "upd"))
        allowed = TARGETS["writes_per_reply"] + (f["reply_s"] or 0)
        ratio = f["bytes_per_reply"] / f["reply_chars"] if f["reply_chars"] else None
        pace = "50/s" if f["delay"] else "unpaced"
        rows.append([
            str(f["tokens"]), pace, num(f["reply_chars"]), num(f["bytes_per_reply"]), num(ratio, 2),
            num(f["deltas_per_reply"], 1), num(f["reply_s"], 2),
            f"{num(writes, 1)} ({num(db.get('message_ins'), 1)} ins + {num(db.get('message_upd'), 1)} upd msg, "
            f"{num(db.get('conversation_upd'), 1)} upd conv, {num(db.get('usage_ins', 0), 1)} ins usage)",
            f"{num(allowed, 1)} {verdict(writes <= allowed)}",
            num(db["sessions"] * 100, 1) if "sessions" in db else "—",
        ])
    if not rows:
        return ""
    n = results["wire"][0]["n"]
    unpaced = [f for f in results["wire"] if not f["delay"] and f["reply_chars"]]
    slope = ""
    if len(unpaced) >= 2:
        first, last = unpaced[0], unpaced[-1]
        per_char = (last["bytes_per_reply"] - first["bytes_per_reply"]) / (last["reply_chars"] - first["reply_chars"])
        fixed = first["bytes_per_reply"] - per_char * first["reply_chars"]
        slope = (f"Unpaced, bytes per reply ≈ {fixed:,.0f} + {per_char:.2f} × reply chars "
                 f"(from M = {first['tokens']} to {last['tokens']}): linear in the reply, plus a fixed cost of "
                 "the frames around it. ")
    return "\n".join([
        f"### Bytes on the wire and database writes per reply (N = {n} at once)",
        "",
        table(["M tokens", "upstream", "reply chars", "bytes per reply", "bytes ÷ reply (≤ 2)",
               "delta frames", "streaming s", "DB writes per reply", "allowed: 2 + 1/s",
               "DB connections opened per 100 replies"], rows),
        "",
        slope + "Bytes are the UTF-8 payloads of every frame the sending tab receives after its `send` "
        "(its own message, the title, the reply's `message`, the deltas and `done`), without the "
        "2–4 byte websocket frame headers. DB writes are `n_tup_ins + n_tup_upd` of "
        "`conversations_message`, `conversations_conversation` and `conversations_usage` in "
        "`pg_stat_user_tables`, read "
        f"after every backend had been idle {10} s (Postgres 15 flushes them no sooner), ÷ N; they "
        "include the member's own message. Connections opened are `pg_stat_database.sessions` "
        "over the same window, × 100 ÷ N.",
        *api_lines(results),
    ])


def api_lines(results: dict) -> list[str]:
    api = results.get("api")
    if not api:
        return []
    return ["", f"JSON API: {api['ok']}/{api['requests']} requests (`GET /api/conversations/`, "
                f"{api['concurrency']} at a time) opened {api['connections_opened']} database connections "
                f"in {api['seconds']:.1f} s."]


def watch_section(results: dict) -> str:
    rows = [
        [str(w["n"]), str(w["tokens"]), "50/s" if w["delay"] else "unpaced", str(w["matched"]),
         num(w["p50_ms"], 2), num(w["p90_ms"], 2), num(w["p99_ms"], 2),
         f"{w['ok']}/{w['n']} + {w['watchers_ok']}/{w['n']}"]
        for w in results.get("watch", [])
    ]
    if not rows:
        return ""
    return "\n".join([
        "### Two processes: a second daphne watching the same conversations (channels-redis)",
        "",
        table(["N", "M", "upstream", "deltas matched", "added p50 ms", "p90 ms", "p99 ms", "replies ok (A + B)"], rows),
        "",
        "Added latency: a delta's arrival at the socket on the other process minus its arrival at the "
        "socket on the generating process (same client process, matched by message id and offset).",
    ])


def idle_section(results: dict) -> str:
    idle = results.get("idle")
    if not idle:
        return ""
    kb = idle["kb_per_socket"]
    return "\n".join([
        f"### Idle sockets ({idle['connected']} of {idle['sockets']} open, authenticated, one conversation each)",
        "",
        table(["VmRSS before", "VmRSS open", "KB per socket (< 50)", "idle CPU over "
               f"{idle['idle_seconds']:.0f} s", "opening took"],
              [[f"{idle['rss_before_mb']:.1f} MB", f"{idle['rss_open_mb']:.1f} MB",
                f"{num(kb, 1)} {verdict(kb is not None and kb < TARGETS['idle_kb'])}",
                f"{idle['idle_cpu_percent']:.2f}% of a core ({idle['idle_cpu_s'] * 1000:.0f} ms)",
                f"{idle['open_seconds']:.1f} s"]]),
    ])


def context_section(results: dict) -> str:
    c = results.get("context")
    if not c:
        return ""
    return "\n".join([
        f"### Context rebuild of a {c['messages']:,}-message conversation (in-process)",
        "",
        table(["queries (≤ 3)", "time, median of " + str(c["repeats"]), "branch", "sent upstream", "dropped (budget)"],
              [[f"{c['queries']} {verdict(c['queries'] <= TARGETS['context_queries'])}",
                f"{c['ms_median']:.1f} ms (min {c['ms_min']:.1f})", str(c["branch"]),
                f"{c['sent']} (~{c['estimated_tokens']:,} tokens)", str(c["dropped"])]]),
        "",
        "`load_branch` + `build_context` under `CaptureQueriesContext`; turns alternate a 40-word "
        "question and a 250-word answer.",
    ])


def targets_section(results: dict) -> str:
    unpaced = main_figures(results, True).get(100)
    rows = []
    if unpaced:
        ratio, cpu = median_or_none(unpaced["ratio"]), median_or_none(unpaced["cpu"])
        rows += [
            ["relay ≥ 0.5× direct, N=100", num(ratio, 2), verdict(None if ratio is None else ratio >= TARGETS["ratio"])],
            ["≤ 0.05 CPU-ms per token, N=100", num(cpu, 3), verdict(None if cpu is None else cpu <= TARGETS["cpu_ms_per_token"])],
            ["added TTFT p50 ≤ 5 ms, N=100", num(unpaced["ttft_p50"], 1),
             verdict(None if unpaced["ttft_p50"] is None else unpaced["ttft_p50"] <= TARGETS["ttft_p50_ms"])],
            ["added TTFT p99 ≤ 30 ms, N=100", num(unpaced["ttft_p99"], 1),
             verdict(None if unpaced["ttft_p99"] is None else unpaced["ttft_p99"] <= TARGETS["ttft_p99_ms"])],
        ]
    paced = main_figures(results, False).get(100)
    if paced:
        cpu = median_or_none(paced["cpu"])
        rows += [
            ["≤ 0.05 CPU-ms per token, N=100 paced", num(cpu, 3), verdict(None if cpu is None else cpu <= TARGETS["cpu_ms_per_token"])],
            ["added TTFT p50 / p99 ≤ 5 / 30 ms, N=100 paced", f"{num(paced['ttft_p50'], 1)} / {num(paced['ttft_p99'], 1)}",
             verdict(None if paced["ttft_p50"] is None else
                     paced["ttft_p50"] <= TARGETS["ttft_p50_ms"] and paced["ttft_p99"] <= TARGETS["ttft_p99_ms"])],
        ]
    for f in results.get("wire", []):
        db = f.get("db_per_reply", {})
        writes = sum(value for key, value in db.items() if key.endswith(("_ins", "_upd")))
        allowed = TARGETS["writes_per_reply"] + (f["reply_s"] or 0)
        pace = ", 50/s" if f["delay"] else ""
        rows.append([f"≤ 2 DB writes per reply + 1/s, M={f['tokens']}{pace}", f"{writes:.1f} (allowed {allowed:.1f})",
                     verdict(writes <= allowed)])
        ratio = f["bytes_per_reply"] / f["reply_chars"] if f["reply_chars"] else None
        rows.append([f"≤ 2× bytes per reply, M={f['tokens']}{pace}", num(ratio, 2),
                     verdict(None if ratio is None else ratio <= TARGETS["bytes_ratio"])])
    if results.get("context"):
        q = results["context"]["queries"]
        rows.append(["context rebuild ≤ 3 queries", str(q), verdict(q <= TARGETS["context_queries"])])
    if results.get("idle") and results["idle"]["kb_per_socket"] is not None:
        kb = results["idle"]["kb_per_socket"]
        rows.append([f"< 50 KB per idle socket ({results['idle']['connected']} open)", f"{kb:.1f} KB",
                     verdict(kb < TARGETS["idle_kb"])])
    return "\n".join(["### Targets", "", table(["target", "measured", ""], rows)])


def profile_section(results: dict) -> str:
    p = results.get("profile")
    if not p:
        return ""
    if "skipped" in p:
        return f"### Profile\n\nSkipped: {p['skipped']}"
    top = [[f"`{name}`", f"{share:.1f}%"] for name, share in p["self"][:15]]
    packages = [[name, f"{share:.1f}%"] for name, share in p["packages"][:12]]
    app = [[f"`{name}`", f"{share:.1f}%"] for name, share in p["app_total"][:10]]
    return "\n".join([
        f"### Profile of the app (py-spy at 100 Hz, {p['samples']:,} samples over the {p['seconds']:.1f} s "
        f"from `go` to the last reply of N={p['n']} unpaced replies, {p['replies_ok']}/{p['n']} of which "
        "arrived whole; idle samples left out)",
        "",
        "Where the samples were (the innermost frame), by function:",
        "",
        table(["function (file)", "% of samples"], top),
        "",
        "By package of the innermost frame:",
        "",
        table(["package", "% of samples"], packages),
        "",
        "The app's own functions, counting everything they call:",
        "",
        table(["function (file)", "% of samples"], app),
    ])


def notes_section(results: dict) -> str:
    notes = results.get("notes") or []
    return "" if not notes else "### Notes\n\n" + "\n".join(f"- {note}" for note in notes)


def render(results: dict) -> str:
    sections = [
        header(results),
        throughput_section(results, True),
        throughput_section(results, False),
        noise_section(results),
        wire_section(results),
        watch_section(results),
        idle_section(results),
        context_section(results),
        targets_section(results),
        profile_section(results),
        notes_section(results),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


# Profile parsing


def _package(frame: str) -> str:
    """'send (channels_redis/core.py)' -> 'channels_redis'; a stdlib module keeps its name."""
    if "(" not in frame:
        return frame
    path = frame.rsplit("(", 1)[1].rstrip(")")
    first = path.split("/", 1)[0]
    return first.removesuffix(".py")


def profile_summary(raw: str) -> dict:
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


# docs/benchmarks.md


def update_docs(path: Path, markdown: str) -> None:
    """Put the generated markdown between the markers, keeping the hand-written text around it."""
    block = f"{BEGIN}\n\n{markdown}\n{END}"
    if path.exists() and BEGIN in path.read_text() and END in path.read_text():
        text = path.read_text()
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        path.write_text(before + block + after)
    else:
        path.write_text(f"# Benchmarks\n\n{block}\n")
