"""Token counts when the model server reports none: an estimate, by script.

A character count divided by four fits English (about four characters a
token in OpenAI's encodings) but is wrong for Chinese, Japanese and Korean,
where one character is about one token. So characters of those scripts
count one each and the rest a quarter each. Exact counts need the model's own
tokenizer, which differs between model servers and ships with none of them
here; every count made here is flagged `estimated` where it is stored.
"""

from __future__ import annotations

import math
import re

# Han (with extension A and compatibility ideographs), kana, Hangul, and CJK punctuation.
_ONE_TOKEN_EACH = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # the role and separators around each message
IMAGE_TOKENS = 85  # what one low-detail image costs; a fair floor for any image


def estimate(text: str) -> int:
    """Tokens in `text`, estimated: one per CJK character, one per four other characters."""
    if not text:
        return 0
    wide = len(_ONE_TOKEN_EACH.findall(text))
    return wide + math.ceil((len(text) - wide) / CHARS_PER_TOKEN)


def estimate_message(text: str, images: int = 0) -> int:
    return estimate(text) + images * IMAGE_TOKENS + MESSAGE_OVERHEAD_TOKENS
