"""Token counts when the model server reports none: an estimate, by script.

A character count divided by four fits English (about four characters a
token in OpenAI's encodings) but is wrong for Chinese, Japanese and Korean,
where a character is a token or more. So characters of those scripts count
1.1 each and the rest one per 4.2 characters: against OpenAI's cl100k tokenizer
that is within 25% on English prose, docs, Python code and Chinese articles,
and usually within 10% (tests/test_usage.py measures it; the figures were
fitted on those texts). Tokenizers differ between model servers (newer ones
spend fewer tokens on Chinese, so this errs high there, the safe side for
quotas); every count made here is flagged `estimated` where it is stored.
"""

from __future__ import annotations

import math
import re

# Han (with extension A and compatibility ideographs), kana, Hangul, and CJK punctuation.
_WIDE = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
CHARS_PER_TOKEN = 4.2  # English and code in cl100k
TOKENS_PER_WIDE_CHAR = 1.1  # a CJK character in cl100k: 1 for common ones, 2 or 3 for the rest
MESSAGE_OVERHEAD_TOKENS = 4  # the role and separators around each message
IMAGE_TOKENS = 85  # what one low-detail image costs; a fair floor for any image


def estimate(text: str) -> int:
    """Tokens in `text`, estimated: 1.1 per CJK character, one per 4.2 other characters."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    return math.ceil(wide * TOKENS_PER_WIDE_CHAR) + math.ceil((len(text) - wide) / CHARS_PER_TOKEN)


def estimate_message(text: str, images: int = 0) -> int:
    return estimate(text) + images * IMAGE_TOKENS + MESSAGE_OVERHEAD_TOKENS
