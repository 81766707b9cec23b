"""Per-conversation Chat Completions parameters: what is allowed and in what range."""

from __future__ import annotations

from numbers import Real

from django.utils.translation import gettext as _

PARAM_NAMES = (
    "temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty",
    "stop", "seed", "response_format", "user", "logit_bias", "logprobs", "top_logprobs", "n",
)
MAX_LOGIT_BIAS_ENTRIES = 300  # OpenAI's own limit
MAX_TOKEN_ID = 10_000_000  # above every tokenizer's vocabulary
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


class ParamsError(ValueError):
    pass


def _number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not low <= value <= high:
        raise ParamsError(_("%(name)s must be a number from %(low)s to %(high)s")
                          % {"name": name, "low": f"{low:g}", "high": f"{high:g}"})
    return value


def _integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamsError(_("%(name)s must be a whole number from %(low)s to %(high)s")
                          % {"name": name, "low": low, "high": high})
    return value


def clean_params(params) -> dict:
    """Validate a params object; unknown names and out-of-range values are errors."""
    if not isinstance(params, dict):
        raise ParamsError(_("params must be an object"))
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ParamsError(_("unknown parameter(s): %(names)s") % {"names": ", ".join(unknown)})
    if _has_nul(params):
        raise ParamsError(_("params must not contain NUL characters"))
    cleaned = {}
    for name, value in params.items():
        if value is None:
            continue  # null clears a parameter
        if name == "temperature":
            cleaned[name] = _number(name, value, 0, 2)
        elif name == "top_p":
            cleaned[name] = _number(name, value, 0, 1)
        elif name in ("presence_penalty", "frequency_penalty"):
            cleaned[name] = _number(name, value, -2, 2)
        elif name == "max_tokens":
            cleaned[name] = _integer(name, value, 1, 1_000_000)
        elif name == "seed":
            cleaned[name] = _integer(name, value, -(2**63), 2**63 - 1)
        elif name == "stop":
            cleaned[name] = _stop(value)
        elif name == "response_format":
            cleaned[name] = _response_format(value)
        elif name == "user":
            # Accepted for the contract; what goes upstream is the server's opaque id of the member.
            if not isinstance(value, str) or len(value) > 256:
                raise ParamsError(_("user must be a string of at most 256 characters"))
            cleaned[name] = value
        elif name == "logit_bias":
            cleaned[name] = _logit_bias(value)
        elif name == "logprobs":
            if not isinstance(value, bool):
                raise ParamsError(_("logprobs must be true or false"))
            cleaned[name] = value
        elif name == "top_logprobs":
            cleaned[name] = _integer(name, value, 0, 5)
        elif name == "n":
            if isinstance(value, bool) or value != 1:
                # Each reply is one message, one branch: n > 1 would stream several answers
                # into one, or be billed for answers nobody sees. Regenerate makes siblings.
                raise ParamsError(_("n must be 1: regenerate a reply to get another answer"))
            cleaned[name] = 1
    if cleaned.get("top_logprobs") and not cleaned.get("logprobs"):
        raise ParamsError(_("top_logprobs needs logprobs: true"))
    return cleaned


def _logit_bias(value) -> dict:
    """Token ids (as strings, the JSON way) to a bias from -100 to 100."""
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS_ENTRIES:
        raise ParamsError(_("logit_bias must be an object of at most %(limit)s token ids")
                          % {"limit": MAX_LOGIT_BIAS_ENTRIES})
    cleaned = {}
    for token, bias in value.items():
        if not (isinstance(token, str) and token.isascii() and token.isdigit() and int(token) <= MAX_TOKEN_ID):
            raise ParamsError(_("logit_bias keys must be token ids (whole numbers, as strings)"))
        cleaned[str(int(token))] = _number(f"logit_bias[{token}]", bias, -100, 100)
    return cleaned


def _has_nul(value) -> bool:
    """Postgres jsonb cannot store \\u0000 anywhere, keys included."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _stop(value):
    if isinstance(value, str) and 0 < len(value) <= 100:
        return value
    if (
        isinstance(value, list)
        and 0 < len(value) <= 4
        and all(isinstance(item, str) and 0 < len(item) <= 100 for item in value)
    ):
        return value
    raise ParamsError(_("stop must be a string or a list of up to 4 strings"))


def _response_format(value):
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMAT_TYPES:
        raise ParamsError(_("response_format.type must be one of %(types)s")
                          % {"types": ", ".join(RESPONSE_FORMAT_TYPES)})
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise ParamsError(_("response_format json_schema needs a json_schema object"))
    return value
