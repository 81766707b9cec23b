"""What a long streaming reply costs the browser's main thread.

    .venv/bin/python -m bench.browser            # ~1 minute: prints the figures
    .venv/bin/python -m bench.browser --chars 40000 --rate 200

Debian's Chromium (headless) through Playwright opens the chat as a member would and asks the
fake model server for a ~20,000-character Markdown reply full of code blocks (plus lists, a
table and math), streamed at 100 tokens a second (one word per chunk). While it streams:

- long tasks: a PerformanceObserver for 'longtask' entries (tasks over 50 ms), installed
  before the page's own scripts; and the gaps between animation frames (a requestAnimationFrame
  loop), whose longest bounds the longest block of the main thread below 50 ms too;
- busy share: the CDP Performance domain's `TaskDuration` (main-thread task time) over the
  stream, divided by the stream's wall time; `ScriptDuration`, `LayoutDuration` and
  `RecalcStyleDuration` show where it went.

Goals: no task over 50 ms, under 20% busy. The database is `chat_bench_browser`, dropped and
made anew (never `chat_bench`, which bench.relay owns).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.stack import AppStack, sign_in

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs-browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

WATCH_LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push({start: entry.startTime, duration: entry.duration});
}).observe({type: "longtask", buffered: true});
// The gaps between animation frames: a task that blocks the main thread delays the next frame,
// so the longest gap bounds the longest block, also below the long-task threshold.
window.__frameGaps = [];
(() => {
  let last = null;
  const tick = (now) => {
    if (last !== null && window.__measuring) window.__frameGaps.push(now - last);
    last = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""

SECTION = """## Part {n}: {topic}

Some prose about **{topic}**, with `inline code`, a [link](https://example.com/{n}) and a
formula $E_{n} = m c^2 + {n}$. The next block shows the idea in Python:

```python
def step_{n}(values: list[int]) -> list[int]:
    \"\"\"Double every value, then keep the even ones ({topic}).\"\"\"
    doubled = [value * 2 for value in values]
    return [value for value in doubled if value % 4 == 0]  # keep multiples of four


class Runner{n}:
    def __init__(self, name: str) -> None:
        self.name = name
        self.count = {n}

    def run(self) -> str:
        return f"{{self.name}}: {{step_{n}(list(range(self.count)))}}"
```

And in JavaScript:

```javascript
export function render{n}(items) {{
  const list = document.createElement("ul");
  for (const item of items) {{
    const li = document.createElement("li");
    li.textContent = `${{item.name}} (${{item.count}})`;
    list.append(li);
  }}
  return list;
}}
```

- first point about {topic}
- second point, with **bold** text
- [x] a finished task

| n | square | cube |
|---|--------|------|
| {n} | {sq} | {cube} |

"""
TOPICS = ["parsing", "caching", "streaming", "retries", "layout", "testing", "profiling", "security"]


def markdown_reply(chars: int) -> str:
    parts, n = [], 1
    while sum(map(len, parts)) < chars:
        parts.append(SECTION.format(n=n, topic=TOPICS[n % len(TOPICS)], sq=n * n, cube=n ** 3))
        n += 1
    return "".join(parts)[:chars].rstrip() + "\n"


def measure(chars: int, rate: float) -> dict:
    reply = markdown_reply(chars)
    directive = json.dumps({"text": reply, "delay": 1 / rate})
    with AppStack("chat_bench_browser", LOGS) as app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(WATCH_LONG_TASKS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        sign_in(page, app.origin)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "timeTicks"})

        def metrics() -> dict:
            return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

        page.evaluate("window.__longTasks.length = 0; window.__frameGaps.length = 0; window.__measuring = true")
        box = page.locator("#input")
        box.fill("Write it all fake:" + directive)
        before, started = metrics(), time.monotonic()
        page_started = page.evaluate("performance.now()")
        box.press("Enter")
        reply_el = page.locator("#messages li.message.assistant")
        reply_el.wait_for()
        page.locator("#messages li.message.assistant.complete").wait_for(timeout=(chars / 4 / rate + 120) * 1000)
        after, wall = metrics(), time.monotonic() - started
        long_tasks = [t for t in page.evaluate("window.__longTasks") if t["start"] >= page_started]
        gaps = sorted(page.evaluate("window.__measuring = false, window.__frameGaps"))
        shown = page.locator("#messages li.message.assistant .body").text_content()
        code_blocks = page.locator("#messages li.message.assistant .code-block").count()
        highlighted = page.locator("#messages li.message.assistant .code-block code .hljs-keyword").count()
        browser.close()
    words_expected = len(reply.split())

    def spent(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "reply_chars": len(reply),
        "chunks": words_expected,
        "rate_tokens_per_s": rate,
        "stream_seconds": round(wall, 2),
        "busy_share": round(spent("TaskDuration") / wall, 4),
        "script_s": round(spent("ScriptDuration"), 3),
        "layout_s": round(spent("LayoutDuration"), 3),
        "style_s": round(spent("RecalcStyleDuration"), 3),
        "task_s": round(spent("TaskDuration"), 3),
        "frames": len(gaps),
        "frame_gap_p99_ms": round(gaps[int(len(gaps) * 0.99)] if gaps else 0.0, 1),
        "frame_gap_max_ms": round(gaps[-1] if gaps else 0.0, 1),
        "long_tasks": len(long_tasks),
        "longest_task_ms": round(max((t["duration"] for t in long_tasks), default=0.0), 1),
        "code_blocks": code_blocks,
        "highlighted_keywords": highlighted,
        "shown_chars": len(shown),
        "page_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=20_000, help="length of the reply (default 20000)")
    parser.add_argument("--rate", type=float, default=100.0, help="chunks (tokens) per second (default 100)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.chars, args.rate)
    print(f"reply: {result['reply_chars']} characters, {result['chunks']} chunks at {args.rate:g}/s, "
          f"{result['code_blocks']} code blocks ({result['highlighted_keywords']} keywords highlighted)")
    print(f"stream: {result['stream_seconds']} s")
    print(f"main thread busy: {result['busy_share']:.1%} of the stream "
          f"(tasks {result['task_s']} s: script {result['script_s']} s, layout {result['layout_s']} s, "
          f"style {result['style_s']} s)")
    longest = f"longest {result['longest_task_ms']} ms" if result["long_tasks"] else "none reported"
    print(f"long tasks (> 50 ms): {result['long_tasks']}, {longest}")
    print(f"frames: {result['frames']}, gap between frames p99 {result['frame_gap_p99_ms']} ms, "
          f"longest {result['frame_gap_max_ms']} ms (16.7 ms at 60 Hz; a longer gap is a task that blocked)")
    verdict = result["long_tasks"] == 0 and result["busy_share"] < 0.20
    print("goal (no task over 50 ms, under 20% busy):", "met" if verdict else "NOT met")
    if result["page_errors"]:
        print("page errors:", result["page_errors"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
