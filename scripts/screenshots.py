#!/usr/bin/env python3
"""Screenshots of the main screens into docs/screenshots/, for the README.

    make screenshots      # or: .venv/bin/python scripts/screenshots.py

Starts the app against the fake model server itself (like `make demo`, with a Postgres
database of its own, `chat_screenshots`, dropped and made anew), then drives Debian's
Chromium through Playwright as a member would: a new chat, a streamed reply with code and
math, the sidebar, the settings, branches and an error, a phone, dark mode and Chinese; and
a question with an image, the context's cut and a reply's token view.

    .venv/bin/python scripts/screenshots.py images-tokens-context   # only the pictures named
                                                                    # ("main": all the others)
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.stack import API_KEY, AppStack, sign_in  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

REPLY = (
    "Here is a function that computes the **n-th Fibonacci number** iteratively:\n\n"
    "```python\ndef fibonacci(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n"
    "        a, b = b, a + b  # slide the window\n    return a\n```\n\n"
    "It runs in $O(n)$ time. The closed form is Binet's formula:\n\n"
    "$$F_n = \\frac{\\varphi^n - \\psi^n}{\\sqrt{5}}, \\quad \\varphi = \\frac{1+\\sqrt5}{2}$$\n\n"
    "| n | F(n) |\n|---|------|\n| 10 | 55 |\n| 20 | 6765 |\n\n"
    "- [x] iterative version\n- [ ] matrix power version\n"
)
ZH_REPLY = "当然可以！下面是一个简单的例子：\n\n```javascript\nconst greet = (name) => `你好，${name}！`;\n```\n\n公式 \\(a^2 + b^2 = c^2\\) 就是勾股定理。\n"


def ask(page, text: str) -> None:
    box = page.locator("#input")
    box.fill(text)
    box.press("Enter")
    page.locator("#input").wait_for()
    page.wait_for_function("() => document.getElementById('input').value === ''")


def finished(page, count: int = 1) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#messages li.message.assistant:not(.streaming)').length >= n", arg=count)
    page.wait_for_timeout(300)  # let the last frame paint


def chart_png() -> bytes:
    """A small bar chart, the kind of picture a member asks about."""
    image = Image.new("RGB", (360, 220), (246, 247, 249))
    draw = ImageDraw.Draw(image)
    draw.line([(30, 190), (340, 190)], fill=(120, 130, 145), width=2)
    for n, height in enumerate([70, 110, 95, 150, 135, 170]):
        draw.rectangle([45 + n * 48, 190 - height, 75 + n * 48, 190], fill=(47, 111, 235))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def images_tokens_context(browser, app) -> None:
    """A question with an image, a conversation longer than its model's context (the cut is
    marked), and the last reply's tokens shaded by probability with one token's alternatives."""
    # A model with a small context, served by a provider (the fake model server again).
    code = (
        "from conversations.models import Provider, ProviderModel\n"
        f"p = Provider(name='lab', base_url={app.env['OPENAI_BASE_URL']!r}, allow_private_address=True)\n"
        f"p.set_api_key({API_KEY!r}); p.save()\n"
        "ProviderModel.objects.create(provider=p, name='small-model', enabled=True, context_length=220, supports_images=True)\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=app.env, check=True,
                   capture_output=True)
    desk = browser.new_context(viewport={"width": 1280, "height": 1100}, color_scheme="light")
    page = desk.new_page()
    sign_in(page, app.origin)
    page.locator("#model").select_option(label="small-model · lab")
    page.locator("#settings-open").click()
    page.locator("#set-logprobs").check()
    page.locator("#set-top_logprobs").fill("3")
    page.locator("#settings-save").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files([{"name": "signups.png", "mimeType": "image/png", "buffer": chart_png()}])
    page.wait_for_function("() => !document.querySelector('#attachments li.uploading')")
    ask(page, "What does this chart of weekly sign-ups show? fake:" + json.dumps(
        {"text": "Sign-ups grow over the six weeks, with one dip in week three and the best week last."}))
    finished(page)
    ask(page, "What could explain the dip in week three? fake:" + json.dumps(
        {"text": "A public holiday fell in that week, and the newsletter went out a day late."}))
    finished(page, 2)
    ask(page, "Give me a one-line summary for the team. fake:" + json.dumps(
        {"text": "Steady growth, one holiday dip, record final week.", "delay": 0.02}))
    finished(page, 3)
    page.wait_for_function("() => document.querySelector('#messages .context-cut')")
    page.locator("#messages li.message.assistant").last.locator("button.tokens-toggle").click()
    page.locator("#messages li.message.assistant").last.locator(".token").nth(4).hover()
    page.wait_for_timeout(300)
    page.screenshot(path=OUT / "images-tokens-context.png")
    desk.close()


def main_screens(browser, app) -> None:
    """Signing in, a new chat, streaming, Markdown, an error, branches, settings, dark, a phone, Chinese."""
    desk = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    page = desk.new_page()
    page.goto(f"{app.origin}/accounts/login/")
    page.screenshot(path=OUT / "sign-in.png")
    sign_in(page, app.origin)
    page.screenshot(path=OUT / "new-chat.png")

    ask(page, "Plan a team offsite in three bullet points fake:" + json.dumps(
        {"text": "1. **Pick a date** everyone can make.\n2. **Book a venue** near a station.\n"
                 "3. **Plan one workshop** and leave the afternoon free.\n"}))
    finished(page)
    page.goto(f"{app.origin}/")
    page.locator("#chat[data-ready=true]").wait_for()
    ask(page, "How do I compute Fibonacci numbers quickly? fake:" + json.dumps({"text": REPLY, "delay": 0.02}))
    page.wait_for_function("() => document.querySelector('#messages li.message.assistant.streaming .code-block')")
    page.screenshot(path=OUT / "streaming.png")
    finished(page)
    page.screenshot(path=OUT / "reply-markdown.png")

    # A rate limit, then a retry: two versions of the reply, and the switcher.
    ask(page, 'And the matrix version? fake:{"status": 429, "retry_after": 30, "fail_times": 1}')
    finished(page, 2)
    page.screenshot(path=OUT / "error-rate-limited.png")
    page.locator("#messages li.message.assistant").last.locator("button.retry").click()
    page.wait_for_function("() => document.querySelector('#messages li.message.assistant:last-child .branch-position')"
                           " && document.querySelector('#messages li.message.assistant:last-child').classList.contains('complete')")
    page.wait_for_timeout(300)
    page.screenshot(path=OUT / "branches.png")

    page.locator("#settings-open").click()
    page.locator("#set-system_prompt").fill("You are a concise assistant for the platform team.")
    page.locator("#set-temperature").fill("3")
    page.locator("#settings-save").click()
    page.wait_for_timeout(200)
    page.screenshot(path=OUT / "settings.png")
    page.locator("#settings-cancel").click()

    state = desk.storage_state()
    dark = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark", storage_state=state)
    dark_page = dark.new_page()
    dark_page.goto(page.url)
    finished(dark_page, 2)
    dark_page.locator("#scroller").evaluate("el => { el.scrollTop = 0; }")
    dark_page.wait_for_timeout(300)
    dark_page.screenshot(path=OUT / "dark.png")

    phone = browser.new_context(viewport={"width": 375, "height": 740}, color_scheme="light", is_mobile=True,
                                has_touch=True, device_scale_factor=2, storage_state=state)
    phone_page = phone.new_page()
    phone_page.goto(page.url)
    finished(phone_page, 2)
    phone_page.screenshot(path=OUT / "phone.png")
    phone_page.locator("#sidebar-toggle").click()
    phone_page.wait_for_timeout(400)
    phone_page.screenshot(path=OUT / "phone-sidebar.png")

    chinese = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    zh = chinese.new_page()
    zh.goto(f"{app.origin}/accounts/login/")
    sign_in(zh, app.origin)
    ask(zh, "用 JavaScript 打个招呼 fake:" + json.dumps({"text": ZH_REPLY}, ensure_ascii=False))
    finished(zh)
    zh.screenshot(path=OUT / "chinese.png")
    zh.goto(f"{app.origin}/account/")
    zh.screenshot(path=OUT / "account-zh.png")


def main(names: list[str]) -> None:
    """Every picture, or only those named (the main screens are one: "main")."""
    OUT.mkdir(parents=True, exist_ok=True)
    app = AppStack("chat_screenshots", ROOT / "bench" / "results" / "logs-screenshots")
    media = tempfile.TemporaryDirectory(prefix="screenshots-media-")
    app.env["MEDIA_ROOT"] = media.name  # the uploaded image, gone afterwards
    with media, app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        if not names or "main" in names:
            main_screens(browser, app)
        if not names or "images-tokens-context" in names:
            images_tokens_context(browser, app)
        browser.close()
    print(f"screenshots written to {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main(sys.argv[1:])
