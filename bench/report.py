"""Tables from bench.relay's results: medians over runs, with their spread, beside the targets.

The same markdown is printed at the end of a run, saved in bench/results/latest.md,
and (with --docs) put between the markers of docs/benchmarks.md, whose other text
(the reading of the figures) is written by hand and left alone. The grouping of
the phases into rows is bench/figures.py's.
"""

from __future__ import annotations

from pathlib import Path

from .figures import MODES, main_figures, median_or_none, mode, percentile, spread_percent

BEGIN = "<!-- bench.relay: generated, begin -->"
END = "<!-- bench.relay: generated, end -->"

# The performance issue's goals and DESIGN.md's; docs/benchmarks.md ("Targets") lists them.
TARGETS = {
    "ratio": 0.5,  # relay tokens/s ÷ direct, unpaced N=100
    "cpu_paced_100": 0.05,  # app CPU-ms per token, paced N=100 (below the stateless relay's 0.056)
    "cpu_paced_10": 0.08,  # app CPU-ms per token, paced N=10
    "stores_paced_100": 0.01,  # Postgres + Redis CPU-ms per token, paced N=100
    "added_p50_10": 10.0,  # added time to first token, ms, N=10 sends at once
    "added_p99_10": 30.0,
    "added_p99_100": 150.0,  # N=100 sends at once
    "gap_ms": 50.0,  # while text arrives, an update reaches the tab at least this often
    "bytes_ratio": 2.0,  # bytes per reply ≤ 2× the reply's characters, at 50 tokens/s
    "writes_per_reply": 2.0,  # plus one per second of streaming
    "context_queries": 3,
    "idle_kb": 50.0,
}

PACES = ((True, "unpaced"), (False, "50/s"))


# Formatting


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def spread_cell(values: list[float | None], digits: int = 0) -> str:
    """Median of the runs, and their range when there is more than one."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    median = median_or_none(values)
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


def p50_p99(values: list[float], digits: int = 1) -> str:
    """'p50 / p99' of pooled per-reply figures."""
    if not values:
        return "—"
    return f"{num(percentile(values, 50), digits)} / {num(percentile(values, 99), digits)}"


def gap_cell(gaps: list[float]) -> str:
    """'p50 / p99 / max' of the replies' longest waits for an update."""
    if not gaps:
        return "—"
    return f"{num(percentile(gaps, 50))} / {num(percentile(gaps, 99))} / {num(max(gaps))}"


def medians(sides: list[dict], key: str, digits: int) -> str:
    """'a / b' of the medians of one figure of several relays."""
    return " / ".join(num(median_or_none(s[key]), digits) for s in sides)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table padded to line up in a terminal too."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def at_most(value: float | None, limit: float) -> str:
    return verdict(None if value is None else value <= limit)


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
        f"Code: {version}. App settings: {settings}. Every process on loopback: daphne (the app), the bare "
        "relay's daphne, the fake upstream, the clients' process, Postgres and Redis share the same cores.",
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
        goals = {"ratio": " (≥ 0.5 at N=100)", "cpu": "", "stores": ""}
    else:
        title = (f"### Relay, paced upstream: 50 tokens/s per stream (M = {tokens}, not 500, to keep a reply "
                 f"at 5 s; median of {runs} runs)")
        goals = {"ratio": "", "cpu": " (≤ 0.08 at N=10, ≤ 0.05 at N=100)", "stores": " (≤ 0.01 at N=100)"}
    headers = ["N", "direct tok/s", "relay tok/s", "relay ÷ direct" + goals["ratio"],
               "app CPU-ms per token" + goals["cpu"], "Postgres + Redis CPU-ms per token" + goals["stores"],
               "Postgres / Redis", "deltas per reply", "clients' CPU-ms per token, relay / direct",
               "fake's CPU-ms per token, relay / direct"]
    if not delay_is_zero:
        headers.append("longest wait for an update, ms, p50 / p99 / max: relay (direct)")
    headers.append("replies ok")
    rows = []
    for n, f in figures.items():
        relay, direct = mode(f, "relay"), mode(f, "direct")
        row = [
            str(n), spread_cell(direct["tps"]), held_cell(relay["tps"]), held_cell(f["ratio"], 2),
            held_cell(relay["cpu"], 3), held_cell(relay["stores"], 4), medians([relay], "postgres", 4) + " / "
            + medians([relay], "redis", 4), spread_cell(relay["deltas"], 1),
            medians([relay, direct], "client_cpu", 3), medians([relay, direct], "fake", 4),
        ]
        if not delay_is_zero:
            row.append(f"{gap_cell(relay['gap'])} ({gap_cell(direct['gap'])})")
        row.append(f"{relay['ok']}/{relay['total']}")
        rows.append(row)
    notes = [
        "",
        "CPU per token: CPU-seconds from /proc over the phase (from `go` to the last reply) ÷ the tokens "
        "delivered. The app is its daphne process; Postgres is the backends of the benchmark's database "
        "and the server's own processes (WAL writer, checkpointer, ...), not other databases' backends; "
        "Redis is the server's INFO cpu (the whole server). The clients' CPU is the separate client "
        "process's: for the direct baseline, what reading and parsing the SSE streams with httpx + httpx-sse "
        "costs in Python, the floor of the app's own upstream side. The fake's CPU says whether the "
        "upstream, not the relay, ran short of CPU.",
    ]
    if not delay_is_zero:
        notes += ["", "The longest wait for an update: per reply, the longest interval between two consecutive "
                      "frames at the tab from its first text update to its last; p50, p99 and max over the replies. "
                      "In brackets the same for the direct streams' SSE events: the upstream's own pace (20 ms) "
                      "plus the reader's delays."]
    return "\n".join([title, "", table(headers, rows)] + notes)


def ttft_section(results: dict) -> str:
    """Added time to first token, split at the upstream, for every mode and N."""
    rows = []
    for delay_is_zero, pace in PACES:
        for n, f in main_figures(results, delay_is_zero).items():
            relay, direct, bare = (mode(f, name) for name in MODES)
            rows.append([
                pace, str(n),
                p50_p99(relay["to_upstream"]), p50_p99(relay["after_upstream"]), p50_p99(relay["added"]),
                p50_p99(bare["to_upstream"]), p50_p99(bare["after_upstream"]), p50_p99(bare["added"]),
                p50_p99(direct["to_upstream"]), p50_p99(direct["after_upstream"]), p50_p99(direct["added"]),
                str(len(relay["added"])),
            ])
    if not rows:
        return ""
    return "\n".join([
        "### Added time to first token, N sends at once (ms, p50 / p99 over every reply of every run)",
        "",
        table(["upstream", "N", "app: send → upstream", "app: first chunk → tab", "app: added",
               "bare: send → upstream", "bare: first chunk → tab", "bare: added", "direct: send → upstream",
               "direct: first chunk → reader", "direct: added", "replies (app)"], rows),
        "",
        "Per reply: send → upstream is the fake's `received_at` (it has read the request's body) minus the "
        "client's `send`; first chunk → tab is the first `delta` at the tab minus the fake's `first_chunk_at`; "
        "added is their sum, the time to first token less the upstream's own. The N sends leave one client "
        "process at once. The direct baseline's \"tab\" is its httpx reader. Goals: N=10 p50 ≤ 10 and "
        "p99 ≤ 30 ms, N=100 p99 ≤ 150 ms, checked on the paced rows (Targets).",
    ])


def bare_section(results: dict) -> str:
    """The app beside the bare relay, for the rows where both ran."""
    rows = []
    for delay_is_zero, pace in PACES:
        for n, f in main_figures(results, delay_is_zero).items():
            if "bare" not in f:
                continue
            relay, bare, direct = mode(f, "relay"), f["bare"], mode(f, "direct")
            app_cpu, bare_cpu = median_or_none(relay["cpu"]), median_or_none(bare["cpu"])
            rows.append([
                pace, str(n), medians([direct, relay, bare], "tps", 0),
                medians([relay, bare], "cpu", 3), num(app_cpu / bare_cpu, 1) if app_cpu and bare_cpu else "—",
                medians([relay, bare], "stores", 4),
                p50_p99(relay["added"]), p50_p99(bare["added"]),
                medians([relay, bare], "deltas", 1),
                f"{relay['ok']}/{relay['total']} / {bare['ok']}/{bare['total']}",
            ])
    if not rows:
        return ""
    return "\n".join([
        "### The app beside the bare relay (same runs, same clients, same fake upstream)",
        "",
        table(["upstream", "N", "tok/s: direct / app / bare", "CPU-ms per token: app / bare", "app ÷ bare",
               "Postgres + Redis CPU-ms per token: app / bare", "app: added TTFT p50 / p99 ms",
               "bare: added TTFT p50 / p99 ms",
               "deltas per reply: app / bare", "replies ok: app / bare"], rows),
        "",
        "The bare relay (bench/bare_relay.py) is the smallest honest relay on the same stack: daphne, and "
        "httpx + httpx-sse reading the upstream as the app does, a `delta` frame per chunk to the one socket "
        "that asked; no Django, auth, database, channel layer or coalescing. Its cost is the stack's; the "
        "app's beyond it is what our features cost (sessions, a turn's rows, Redis fan-out, coalescing, the "
        "send bound). Medians over runs; added TTFT pooled over replies. The bare relay uses neither Postgres "
        "nor Redis: its figure there is what the two servers spent anyway over the same window (their "
        "background work, other clients), the floor under the app's.",
    ])


def noise_section(results: dict) -> str:
    runs = results.get("runs", [])
    if len(runs) < 2:
        return "### Noise\n\nOne run only: no spread to report."
    rows = []
    for delay_is_zero, pace in PACES:
        for n, f in main_figures(results, delay_is_zero).items():
            relay, direct = mode(f, "relay"), mode(f, "direct")
            rows.append([pace, str(n), num(spread_percent(direct["tps"])), num(spread_percent(relay["tps"])),
                         num(spread_percent(f["ratio"])), num(spread_percent(relay["cpu"])),
                         num(spread_percent(mode(f, "bare")["cpu"]))])
    machine = "; ".join(f"run {r['run']}: {run_load(r['machine'])}" for r in runs)
    return "\n".join([
        "### Noise: spread across runs, (max − min) ÷ median, %",
        "",
        table(["upstream", "N", "direct tok/s", "relay tok/s", "ratio", "app CPU per token", "bare CPU per token"],
              rows),
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
    exact = results.get("plan", {}).get("exact_db_counters", True)
    for f in results.get("wire", []):
        db = f.get("db_per_reply", {})
        writes = db_writes(db)
        allowed = TARGETS["writes_per_reply"] + (f["reply_s"] or 0)
        writes_verdict = verdict(writes <= allowed) if exact else "(approximate)"
        chars = f["reply_chars"]
        wire_ratio = f["wire_bytes_per_reply"] / chars if chars and f.get("wire_bytes_per_reply") else None
        payload_ratio = f["bytes_per_reply"] / chars if chars else None
        rows.append([
            str(f["tokens"]), "50/s" if f["delay"] else "unpaced", num(chars),
            f"{num(f.get('wire_bytes_per_reply'))} ({num(wire_ratio, 2)}×)",
            f"{num(f['bytes_per_reply'])} ({num(payload_ratio, 2)}×)",
            num(f["deltas_per_reply"], 1), gap_cell(f.get("gap_ms") or []), num(f["reply_s"], 2),
            f"{num(writes, 1)} ({num(db.get('message_ins'), 1)} ins + {num(db.get('message_upd'), 1)} upd msg, "
            f"{num(db.get('conversation_upd'), 1)} upd conv, {num(db.get('usage_ins', 0), 1)} ins usage)",
            f"{num(allowed, 1)} {writes_verdict}",
            num(db["sessions"] * 100, 1) if "sessions" in db else "—",
        ])
    if not rows:
        return ""
    wire = results["wire"]
    compressed = "permessage-deflate was negotiated" if any(f.get("compressed") for f in wire) else (
        "the app did not agree to permessage-deflate (the clients offer it, as browsers do), so the two "
        "differ by the frame headers only")
    return "\n".join([
        f"### Bytes and database writes per reply (N = {wire[0]['n']} at once)",
        "",
        table(["M tokens", "upstream", "reply chars", "bytes on the wire (÷ reply, ≤ 2× at 50/s)",
               "payload bytes (÷ reply)", "delta frames", "longest wait for an update, ms, p50 / p99 / max",
               "streaming s", "DB writes per reply", "allowed: 2 + 1/s", "DB connections opened per 100 replies"],
              rows),
        "",
        slope_line(wire) + "Both byte counts cover every frame the sending tab receives after its `send` up to "
        "the reply's `done` (its own message, the reply's `message`, the deltas, `done`, and whatever else the app "
        "sends meanwhile). Bytes on the wire are the frames as they travelled, header and payload, compressed if "
        f"the connection compresses; payload bytes are the UTF-8 text the page gets. Here {compressed}. "
        "DB writes are `n_tup_ins + n_tup_upd` of `conversations_message`, `conversations_conversation` and "
        "`conversations_usage` in `pg_stat_user_tables`, "
        + ("read after every backend had been idle 10 s (Postgres 15 flushes them no sooner)" if exact else
           "read at once (--quick: approximate, Postgres 15 flushes them after 10 s idle)")
        + ", ÷ N; they include the member's own message. Connections opened are `pg_stat_database.sessions` "
        "over the same window, × 100 ÷ N.",
        *api_lines(results),
    ])


def db_writes(db: dict) -> float:
    return sum(db.get(f"{t}_{kind}", 0) for t in ("message", "conversation", "usage") for kind in ("ins", "upd"))


def slope_line(wire: list[dict]) -> str:
    unpaced = [f for f in wire if not f["delay"] and f["reply_chars"]]
    if len(unpaced) < 2:
        return ""
    first, last = unpaced[0], unpaced[-1]
    per_char = (last["bytes_per_reply"] - first["bytes_per_reply"]) / (last["reply_chars"] - first["reply_chars"])
    fixed = first["bytes_per_reply"] - per_char * first["reply_chars"]
    return (f"Unpaced, payload bytes per reply ≈ {fixed:,.0f} + {per_char:.2f} × reply chars "
            f"(from M = {first['tokens']} to {last['tokens']}): linear in the reply, plus a fixed cost of "
            "the frames around it. ")


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
    rows = []
    unpaced = main_figures(results, True).get(100)
    if unpaced:
        ratio = median_or_none(unpaced["ratio"])
        rows.append(["relay ≥ 0.5× direct, unpaced N=100", num(ratio, 2),
                     verdict(None if ratio is None else ratio >= TARGETS["ratio"])])
    paced = main_figures(results, False)
    for n, cpu_goal in ((100, "cpu_paced_100"), (10, "cpu_paced_10")):
        if n not in paced:
            continue
        cpu = median_or_none(mode(paced[n], "relay")["cpu"])
        rows.append([f"app ≤ {TARGETS[cpu_goal]} CPU-ms per token, paced N={n}", num(cpu, 3),
                     at_most(cpu, TARGETS[cpu_goal])])
    if 100 in paced:
        stores = median_or_none(mode(paced[100], "relay")["stores"])
        rows.append(["Postgres + Redis ≤ 0.01 CPU-ms per token, paced N=100", num(stores, 4),
                     at_most(stores, TARGETS["stores_paced_100"])])
    if 10 in paced:
        added = mode(paced[10], "relay")["added"]
        p50, p99 = percentile(added, 50), percentile(added, 99)
        rows.append(["added TTFT p50 ≤ 10 ms, N=10 sends at once (paced)", num(p50, 1), at_most(p50, 10.0)])
        rows.append(["added TTFT p99 ≤ 30 ms, N=10 sends at once (paced)", num(p99, 1), at_most(p99, 30.0)])
    if 100 in paced:
        p99 = percentile(mode(paced[100], "relay")["added"], 99)
        rows.append(["added TTFT p99 ≤ 150 ms, N=100 sends at once (paced)", num(p99, 1), at_most(p99, 150.0)])
        gaps = mode(paced[100], "relay")["gap"]
        worst = percentile(gaps, 99)
        rows.append(["an update at least every 50 ms while text arrives, paced N=100 (p99 of each reply's "
                     "longest wait)", num(worst), at_most(worst, TARGETS["gap_ms"])])
    exact = results.get("plan", {}).get("exact_db_counters", True)
    for f in results.get("wire", []):
        pace = ", 50/s" if f["delay"] else ""
        writes, allowed = db_writes(f.get("db_per_reply", {})), TARGETS["writes_per_reply"] + (f["reply_s"] or 0)
        if exact:  # --quick reads the counters before Postgres has flushed them
            rows.append([f"≤ 2 DB writes per reply + 1/s, M={f['tokens']}{pace}",
                         f"{writes:.1f} (allowed {allowed:.1f})", verdict(writes <= allowed)])
        if f["delay"] and f["reply_chars"]:
            ratio = (f.get("wire_bytes_per_reply") or f["bytes_per_reply"]) / f["reply_chars"]
            rows.append([f"bytes on the wire ≤ 2× the reply, M={f['tokens']}{pace}", num(ratio, 2),
                         at_most(ratio, TARGETS["bytes_ratio"])])
            worst = percentile(f.get("gap_ms") or [], 99)
            rows.append([f"an update at least every 50 ms while text arrives, M={f['tokens']}{pace} (p99)",
                         num(worst), at_most(worst, TARGETS["gap_ms"])])
    if results.get("context"):
        q = results["context"]["queries"]
        rows.append(["context rebuild ≤ 3 queries", str(q), verdict(q <= TARGETS["context_queries"])])
    if results.get("idle") and results["idle"]["kb_per_socket"] is not None:
        kb = results["idle"]["kb_per_socket"]
        rows.append([f"< 50 KB per idle socket ({results['idle']['connected']} open)", f"{kb:.1f} KB",
                     verdict(kb < TARGETS["idle_kb"])])
    return "\n".join(["### Targets", "", table(["target", "measured", ""], rows)])


def profile_section(results: dict) -> str:
    return "\n\n".join(one_profile(p) for p in results.get("profiles") or [])


def one_profile(p: dict) -> str:
    if "skipped" in p:
        return f"### Profile{' (' + p['pace'] + ')' if 'pace' in p else ''}\n\nSkipped: {p['skipped']}"
    top = [[f"`{name}`", f"{share:.1f}%"] for name, share in p["self"][:15]]
    packages = [[name, f"{share:.1f}%"] for name, share in p["packages"][:12]]
    app = [[f"`{name}`", f"{share:.1f}%"] for name, share in p["app_total"][:10]]
    pace = "paced (50 tokens/s)" if p["delay"] else "unpaced"
    return "\n".join([
        f"### Profile of the app, {pace} N={p['n']} (py-spy at {p['rate_hz']} Hz, {p['samples']:,} samples over "
        f"the {p['seconds']:.1f} s from `go` to the last reply; {p['replies_ok']}/{p['n']} replies whole, "
        f"{num(p['cpu_ms_per_token'], 3)} CPU-ms per token; idle samples left out)",
        "",
        f"Raw samples (collapsed stacks, for flamegraph.pl, speedscope or inferno): `{p['raw']}`.",
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
        ttft_section(results),
        bare_section(results),
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
