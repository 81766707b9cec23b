"""English and Simplified Chinese ship together: the compiled catalogues match their sources,
every word is translated, and the page's script has its own words for every error code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.utils import translation

from conversations.chat import errors

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
SCRIPT_WORDS = ROOT / "static" / "js" / "i18n.js"


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_the_compiled_catalogue_is_up_to_date_with_its_source(domain, tmp_path):
    if not shutil.which("msgfmt"):
        pytest.skip("msgfmt (gettext) is not installed")
    compiled = tmp_path / f"{domain}.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(MESSAGES / f"{domain}.po")], check=True)
    assert compiled.read_bytes() == (MESSAGES / f"{domain}.mo").read_bytes(), (
        f"locale/zh_Hans/LC_MESSAGES/{domain}.mo is stale: run `python manage.py compilemessages`"
    )


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_word_is_translated(domain):
    if not shutil.which("msgfmt"):
        pytest.skip("msgfmt (gettext) is not installed")
    report = subprocess.run(
        ["msgfmt", "--statistics", "-o", "/dev/null", str(MESSAGES / f"{domain}.po")],
        capture_output=True, text=True, check=True,
    ).stderr
    assert "untranslated" not in report and "fuzzy" not in report, report


def test_the_script_has_words_for_every_error_code_and_reason():
    source = SCRIPT_WORDS.read_text()
    for code in errors.CODES:
        assert re.search(rf"^\s+{code}: \(\) => gettext\(", source, re.M), f"no words for {code} in i18n.js"
    for code, reason in errors._BY_REASON:
        assert f'"{code}/{reason}": () => gettext(' in source, f"no words for {code}/{reason} in i18n.js"
    # The same English as the server's, so both are translated once and read the same.
    for key, words in list(errors._BY_CODE.items()) + [(f"{c}/{r}", w) for (c, r), w in errors._BY_REASON.items()]:
        with translation.override("en"):
            assert f'gettext("{words}")' in source.replace("\\'", "'"), f"{key}: the script's words differ"


def test_server_error_words_read_in_chinese():
    with translation.override("zh-hans"):
        assert errors.describe("upstream_rate_limited", {"reason": "retry_after", "retry_after": 7}) == (
            "模型服务器正在限制请求频率；请在 7 秒后重试。"
        )
        assert errors.describe("busy", {"reason": "draining"}) == "服务器正在重启；请稍后再发送。"
