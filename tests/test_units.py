"""Fast unit tests of the chat engine's small modules: frame validation,
parameters, context building, and the upstream client's error mapping
(the latter against the fake upstream as a real HTTP server)."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from django.conf import settings as django_settings

from conversations.chat.context import build_context, load_branch
from conversations.chat.errors import describe
from conversations.chat.params import ParamsError, clean_params
from conversations.models import Conversation, Message
from conversations.realtime.frames import FrameError, parse_frame
from conversations.upstream.client import Endpoint, UpstreamError, error_from_object, stream_chat
from tests.conftest import free_port

KEY = django_settings.OPENAI_API_KEY


def frame(**fields) -> str:
    return json.dumps(fields)


def refused(raw: str) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_frame(raw)
    return caught.value


# --------------------------------------------------------------------------- frames


def test_a_send_with_string_content_parses():
    client_id = uuid.uuid4()
    parsed = parse_frame(frame(type="send", content="Hello there", client_id=str(client_id)))
    assert parsed.type == "send"
    assert parsed.text == "Hello there"
    assert parsed.parts is None
    assert parsed.client_id == client_id


def test_a_send_with_content_parts_keeps_text_and_images_and_drops_unknown_keys():
    parts = [
        {"type": "text", "text": "What is in this picture?", "extra": 1},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    parsed = parse_frame(frame(type="send", content=parts, client_id=str(uuid.uuid4())))
    assert parsed.text == "What is in this picture?"
    assert parsed.parts == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]


def test_a_send_with_only_an_image_is_accepted():
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]
    parsed = parse_frame(frame(type="send", content=parts, client_id=str(uuid.uuid4())))
    assert parsed.text == ""
    assert parsed.parts == parts


def test_a_send_without_client_id_parses_with_no_client_id():
    # The protocol's browser always sends one; without it a send is simply not idempotent.
    assert parse_frame(frame(type="send", content="hi")).client_id is None


@pytest.mark.parametrize("client_id", ["not-a-uuid", "", 12345, ["x"], {"id": 1}, True])
def test_a_send_with_an_invalid_client_id_is_invalid(client_id):
    error = refused(frame(type="send", content="hi", client_id=client_id))
    assert error.code == "invalid"
    assert "client_id" in error.message


@pytest.mark.parametrize("content", ["", "   \n\t ", [{"type": "text", "text": "  "}]])
def test_empty_content_is_invalid(content):
    assert refused(frame(type="send", content=content, client_id=str(uuid.uuid4()))).code == "invalid"


@pytest.mark.parametrize(
    "content",
    [None, 42, True, {"text": "hi"}, [], ["hi"], [{"type": "audio", "data": "x"}], [{"type": "text", "text": 5}],
     [{"type": "text"}], [{"type": "image_url", "image_url": "https://example.com/a.png"}],
     [{"type": "image_url", "image_url": {"url": 5}}]],
)
def test_content_of_the_wrong_type_is_invalid(content):
    assert refused(frame(type="send", content=content, client_id=str(uuid.uuid4()))).code == "invalid"


def test_a_missing_content_is_invalid():
    assert refused(frame(type="send", client_id=str(uuid.uuid4()))).code == "invalid"


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "file:///etc/passwd", "ftp://example.com/a.png", "data:text/html,<script>x</script>",
     "/relative.png", "JaVaScRiPt:alert(1)", " https://example.com/leading-space.png"],
)
def test_an_image_url_with_a_bad_scheme_is_invalid(url):
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "invalid"


def test_an_image_with_an_unknown_detail_is_invalid():
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "ultra"}}]
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "invalid"


def test_an_oversize_frame_is_too_large(settings):
    settings.WS_MAX_FRAME_BYTES = 2048
    error = refused(frame(type="send", content="x" * 3000, client_id=str(uuid.uuid4())))
    assert error.code == "too_large"


def test_an_oversize_frame_is_measured_in_bytes_not_characters(settings):
    settings.WS_MAX_FRAME_BYTES = 2048
    # 1,000 characters but 3,000 bytes of UTF-8.
    raw = json.dumps({"type": "send", "content": "€" * 1000, "client_id": str(uuid.uuid4())}, ensure_ascii=False)
    assert len(raw) < 2048 < len(raw.encode())
    assert refused(raw).code == "too_large"


def test_a_message_over_the_character_limit_is_too_large(settings):
    settings.MAX_MESSAGE_CHARS = 100
    assert refused(frame(type="send", content="y" * 101, client_id=str(uuid.uuid4()))).code == "too_large"
    parts = [{"type": "text", "text": "y" * 60}, {"type": "text", "text": "z" * 60}]
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "too_large"
    assert parse_frame(frame(type="send", content="y" * 100, client_id=str(uuid.uuid4()))).text == "y" * 100


def test_too_many_content_parts_are_too_large():
    parts = [{"type": "text", "text": "a"}] * 21
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "too_large"


@pytest.mark.parametrize("raw", ["not json", "{", "", "{'type': 'send'}"])
def test_a_frame_that_is_not_json_is_invalid(raw):
    assert refused(raw).code == "invalid"


@pytest.mark.parametrize("raw", ["[]", '["send"]', '"send"', "42", "null", "true"])
def test_a_frame_that_is_not_an_object_is_invalid(raw):
    assert refused(raw).code == "invalid"


@pytest.mark.parametrize("kind", ["delete", "SEND", "", "x" * 500])
def test_an_unknown_frame_type_is_invalid(kind):
    error = refused(frame(type=kind))
    assert error.code == "invalid"
    assert len(error.message) < 100  # the echoed type is cut short


@pytest.mark.parametrize("kind", [None, 5, ["send"], {"t": "send"}])
def test_a_frame_without_a_string_type_is_invalid(kind):
    assert refused(json.dumps({"type": kind, "content": "hi"})).code == "invalid"


def test_stop_regenerate_and_edit_frames_parse():
    message_id = uuid.uuid4()
    assert parse_frame(frame(type="stop")).type == "stop"
    regenerate = parse_frame(frame(type="regenerate"))
    assert regenerate.type == "regenerate" and regenerate.message_id is None
    assert parse_frame(frame(type="regenerate", message_id=str(message_id))).message_id == message_id
    edit = parse_frame(frame(type="edit", message_id=str(message_id), content="better"))
    assert (edit.type, edit.message_id, edit.text) == ("edit", message_id, "better")


def test_an_edit_without_a_message_id_or_with_a_bad_one_is_invalid():
    assert refused(frame(type="edit", content="better")).code == "invalid"
    assert refused(frame(type="edit", message_id="nope", content="better")).code == "invalid"
    assert refused(frame(type="edit", message_id=str(uuid.uuid4()), content="")).code == "invalid"
    assert refused(frame(type="regenerate", message_id=7)).code == "invalid"


def test_a_nul_character_in_content_is_invalid():
    # Postgres cannot store NUL in text or jsonb: refuse it before it reaches the database.
    assert refused(frame(type="send", content="a\x00b", client_id=str(uuid.uuid4()))).code == "invalid"
    parts = [{"type": "text", "text": "ok\x00"}]
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "invalid"
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/\x00.png"}}]
    assert refused(frame(type="send", content=parts, client_id=str(uuid.uuid4()))).code == "invalid"


def test_a_lone_surrogate_in_content_is_invalid():
    # Valid JSON (a \u escape) but not storable text.
    raw = '{"type": "send", "content": "a\\ud800b", "client_id": "' + str(uuid.uuid4()) + '"}'
    assert json.loads(raw)["content"] == "a\ud800b"
    assert refused(raw).code == "invalid"


# --------------------------------------------------------------------------- params


def test_params_in_range_are_kept():
    params = {
        "temperature": 0.7, "top_p": 1, "max_tokens": 256, "presence_penalty": -2, "frequency_penalty": 2,
        "stop": ["\n\n", "END"], "seed": 42, "response_format": {"type": "json_object"}, "user": "alice",
    }
    assert clean_params(params) == params


@pytest.mark.parametrize(
    "params",
    [{"temperature": 0}, {"temperature": 2}, {"top_p": 0}, {"top_p": 0.5}, {"max_tokens": 1},
     {"presence_penalty": 1.5}, {"frequency_penalty": -2}, {"seed": -(2**63)}, {"seed": 2**63 - 1},
     {"stop": "###"}, {"stop": ["a", "b", "c", "d"]}, {"response_format": {"type": "text"}},
     {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     {"user": ""}],
)
def test_boundary_values_are_accepted(params):
    assert clean_params(params) == params


@pytest.mark.parametrize(
    "params",
    [{"temperature": 5}, {"temperature": 2.01}, {"temperature": -0.1}, {"temperature": "1"}, {"temperature": True},
     {"temperature": float("nan")}, {"temperature": float("inf")}, {"top_p": 1.5}, {"top_p": -1},
     {"max_tokens": 0}, {"max_tokens": 1.5}, {"max_tokens": "100"}, {"max_tokens": True},
     {"presence_penalty": 2.5}, {"frequency_penalty": -3}, {"seed": 2**63}, {"seed": 1.0},
     {"stop": ""}, {"stop": []}, {"stop": ["a", "b", "c", "d", "e"]}, {"stop": [1]}, {"stop": [""]},
     {"stop": "x" * 101}, {"stop": {"a": 1}},
     {"response_format": "json_object"}, {"response_format": {"type": "xml"}}, {"response_format": {}},
     {"response_format": {"type": "json_schema"}}, {"response_format": {"type": "json_schema", "json_schema": "x"}},
     {"user": 5}, {"user": "u" * 257}],
)
def test_out_of_range_or_wrong_typed_params_are_refused(params):
    with pytest.raises(ParamsError):
        clean_params(params)


def test_unknown_params_are_refused_by_name():
    with pytest.raises(ParamsError, match="functions"):
        clean_params({"temperature": 1, "functions": []})


@pytest.mark.parametrize("params", [None, [], "temperature=1", 3])
def test_params_that_are_not_an_object_are_refused(params):
    with pytest.raises(ParamsError):
        clean_params(params)


def test_null_clears_a_param():
    assert clean_params({"temperature": None, "top_p": 0.9, "stop": None}) == {"top_p": 0.9}
    assert clean_params({}) == {}


def test_a_nul_character_in_a_param_is_refused():
    # Postgres jsonb cannot hold \u0000.
    for params in ({"user": "a\x00"}, {"stop": ["ok", "\x00"]},
                   {"response_format": {"type": "json_schema", "json_schema": {"name": "x\x00"}}}):
        with pytest.raises(ParamsError):
            clean_params(params)


# --------------------------------------------------------------------------- context


def msg(role: str, content: str, **fields) -> Message:
    return Message(role=role, content=content, **fields)


def test_everything_fits_in_a_large_budget(settings):
    settings.CONTEXT_TOKEN_BUDGET = 10_000
    conversation = Conversation(model="m", system_prompt="Be brief.")
    path = [msg("user", "one"), msg("assistant", "two"), msg("user", "three")]
    context = build_context(conversation, path, None)
    assert context.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert context.message_ids == [str(m.id) for m in path]
    assert context.dropped == 0


def test_the_oldest_messages_are_dropped_first_to_fit_the_budget(settings):
    # Each 40-character message costs 40 // 4 + 4 = 14 tokens: three fit in 50, four do not.
    settings.CONTEXT_TOKEN_BUDGET = 50
    conversation = Conversation(model="m")
    path = [msg("user" if i % 2 == 0 else "assistant", f"{i}" * 40) for i in range(6)]
    context = build_context(conversation, path, None)
    assert context.message_ids == [str(m.id) for m in path[-3:]]
    assert [m["content"] for m in context.messages] == ["3" * 40, "4" * 40, "5" * 40]
    assert context.dropped == 3
    assert context.estimated_tokens == 42


def test_the_system_prompt_counts_against_the_budget_and_is_always_kept(settings):
    settings.CONTEXT_TOKEN_BUDGET = 50
    conversation = Conversation(model="m", system_prompt="s" * 40)  # 14 tokens
    path = [msg("user" if i % 2 == 0 else "assistant", f"{i}" * 40) for i in range(5)]
    context = build_context(conversation, path, None)
    assert context.messages[0] == {"role": "system", "content": "s" * 40}
    assert context.message_ids == [str(m.id) for m in path[-2:]]
    assert context.dropped == 3


def test_max_tokens_is_reserved_from_the_budget(settings):
    settings.CONTEXT_TOKEN_BUDGET = 50
    conversation = Conversation(model="m")
    path = [msg("user" if i % 2 == 0 else "assistant", f"{i}" * 40) for i in range(5)]
    context = build_context(conversation, path, 22)  # 28 tokens left: two messages
    assert context.message_ids == [str(m.id) for m in path[-2:]]


def test_the_newest_user_message_is_kept_even_over_the_budget(settings):
    settings.CONTEXT_TOKEN_BUDGET = 50
    conversation = Conversation(model="m", system_prompt="You are terse.")
    path = [msg("user", "old"), msg("assistant", "reply"), msg("user", "q" * 4000)]
    context = build_context(conversation, path, 1000)  # even a negative budget
    assert context.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "q" * 4000},
    ]
    assert context.message_ids == [str(path[-1].id)]
    assert context.dropped == 2


def test_assistant_replies_without_text_are_skipped(settings):
    settings.CONTEXT_TOKEN_BUDGET = 10_000
    conversation = Conversation(model="m")
    failed = msg("assistant", "", status=Message.Status.ERROR, error_code="upstream_unavailable")
    path = [msg("user", "first"), failed, msg("user", "again")]
    context = build_context(conversation, path, None)
    assert context.messages == [{"role": "user", "content": "first"}, {"role": "user", "content": "again"}]
    assert str(failed.id) not in context.message_ids
    assert context.dropped == 0


def test_content_parts_are_sent_as_parts_and_images_cost_tokens(settings):
    settings.CONTEXT_TOKEN_BUDGET = 120
    conversation = Conversation(model="m")
    parts = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}]
    path = [msg("user", "a" * 200), msg("assistant", "b" * 40), msg("user", "see", content_parts=parts)]
    context = build_context(conversation, path, None)
    # The image (85) + overhead fill most of the budget: the 200-character message is dropped.
    assert context.messages[-1] == {"role": "user", "content": parts}
    assert context.message_ids == [str(path[1].id), str(path[2].id)]


@pytest.mark.django_db
def test_the_context_follows_the_current_branch_only(django_user_model, settings):
    settings.CONTEXT_TOKEN_BUDGET = 10_000
    owner = django_user_model.objects.create_user("carol", password="pw-carol-123")
    conversation = Conversation.objects.create(owner=owner, model="m", system_prompt="sys")
    question = Message.objects.create(conversation=conversation, role="user", content="question")
    old_reply = Message.objects.create(conversation=conversation, parent=question, role="assistant", content="old")
    new_reply = Message.objects.create(conversation=conversation, parent=question, role="assistant", content="new")
    follow_up = Message.objects.create(conversation=conversation, parent=new_reply, role="user", content="more")

    path = load_branch(conversation, follow_up.id)
    assert [m.id for m in path] == [question.id, new_reply.id, follow_up.id]
    context = build_context(conversation, path, None)
    assert [m["content"] for m in context.messages] == ["sys", "question", "new", "more"]
    assert str(old_reply.id) not in context.message_ids


# --------------------------------------------------------------------------- upstream errors


def body_for(text: str) -> dict:
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run(endpoint: Endpoint, directive: dict | None = None, text: str = "hello"):
    """Stream one reply; return (chunks received, the UpstreamError or None)."""
    content = f"{text} fake:{json.dumps(directive)}" if directive else text
    chunks = []
    try:
        async with contextlib.aclosing(stream_chat(endpoint, body_for(content))) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    except UpstreamError as error:
        return chunks, error
    return chunks, None


@pytest.fixture
def endpoint(upstream) -> Endpoint:
    return Endpoint(upstream.base_url, KEY)


@pytest.fixture
def no_retries(settings):
    settings.UPSTREAM_MAX_RETRIES = 0


def words(error: UpstreamError) -> str:
    """What the member reads of an upstream error (its code and detail, in words)."""
    return describe(error.code, error.detail)


def assert_no_key(error: UpstreamError, key: str = KEY) -> None:
    for text in (words(error), str(error), repr(error), json.dumps(error.detail)):
        assert key not in text
        assert key[:12] not in text


async def test_a_full_stream_yields_every_chunk_with_finish_reason_and_usage(endpoint, upstream):
    chunks, error = await run(endpoint, {"text": "Hello  world, again!\n"})
    assert error is None
    assert "".join(c.content for c in chunks) == "Hello  world, again!\n"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [c.usage for c in chunks if c.usage][0]["completion_tokens"] == 3
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "upstream_error"), (401, "upstream_auth"), (403, "upstream_auth"), (404, "upstream_error"),
     (408, "timeout"), (409, "upstream_error"), (422, "upstream_error"), (429, "upstream_rate_limited"),
     (500, "upstream_unavailable"), (502, "upstream_unavailable"), (503, "upstream_unavailable")],
)
async def test_an_http_status_maps_to_its_error_code(endpoint, upstream, no_retries, status, code):
    chunks, error = await run(endpoint, {"status": status})
    assert chunks == []
    assert error is not None
    assert (error.code, error.status) == (code, status)
    assert words(error)
    assert_no_key(error)


async def test_a_429_for_insufficient_quota_is_quota_and_is_not_retried(endpoint, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 2
    _, error = await run(endpoint, {"status": 429, "error_code": "insufficient_quota", "retry_after": 0})
    assert error.code == "quota"
    assert not error.retryable
    assert len(upstream.requests) == 1


async def test_a_context_length_error_is_too_large(endpoint, no_retries):
    _, error = await run(endpoint, {"status": 400, "error_code": "context_length_exceeded"})
    assert error.code == "too_large"


async def test_a_wrong_api_key_is_upstream_auth_without_the_key(upstream, no_retries):
    wrong = "sk-wrong-key-abcdefghijklmnop"
    _, error = await run(Endpoint(upstream.base_url, wrong))
    assert error.code == "upstream_auth"
    assert error.status == 401
    assert_no_key(error, wrong)
    assert len(upstream.requests) == 1


async def test_a_closed_port_is_upstream_unavailable(no_retries):
    _, error = await run(Endpoint(f"http://127.0.0.1:{free_port()}/v1", KEY))
    assert error.code == "upstream_unavailable"
    assert error.retryable
    assert_no_key(error)


async def test_a_connection_cut_mid_stream_is_upstream_error_and_keeps_the_text_so_far(endpoint, upstream):
    chunks, error = await run(endpoint, {"text": "one two three four", "cut_after": 2})
    assert error.code == "upstream_error"
    assert "".join(c.content for c in chunks) == "one two "
    assert len(upstream.requests) == 1  # never retried after the first token


async def test_a_stream_without_done_is_upstream_error(endpoint, upstream):
    chunks, error = await run(endpoint, {"text": "all of it", "no_done": True})
    assert error.code == "upstream_error"
    assert "".join(c.content for c in chunks) == "all of it"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("error_code", "code"),
    [(None, "upstream_error"), ("context_length_exceeded", "too_large"), ("insufficient_quota", "quota"),
     ("rate_limit_exceeded", "upstream_rate_limited"), ("invalid_api_key", "upstream_auth")],
)
async def test_an_error_object_inside_the_stream_maps_to_its_code(endpoint, upstream, error_code, code):
    chunks, error = await run(endpoint, {"text": "a b c d", "error_after": 2, "error_code": error_code})
    assert error.code == code
    assert "".join(c.content for c in chunks) == "a b "
    assert len(upstream.requests) == 1
    assert_no_key(error)


async def test_a_malformed_chunk_is_upstream_error(endpoint):
    chunks, error = await run(endpoint, {"text": "a b c", "malformed_after": 1})
    assert error.code == "upstream_error"
    assert "malformed" in words(error)
    assert "".join(c.content for c in chunks) == "a "


async def test_a_json_answer_instead_of_a_stream_is_taken_whole(endpoint):
    chunks, error = await run(endpoint, {"text": "the whole answer", "no_stream": True})
    assert error is None
    assert len(chunks) == 1
    assert chunks[0].content == "the whole answer"
    assert chunks[0].finish_reason == "stop"
    assert chunks[0].usage["completion_tokens"] == 3


async def test_a_stalled_stream_times_out(endpoint, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    chunks, error = await run(endpoint, {"text": "a b c", "stall_after": 1})
    assert error.code == "timeout"
    assert "".join(c.content for c in chunks) == "a "


async def test_a_503_with_retry_after_zero_is_retried_and_succeeds(endpoint, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 2
    chunks, error = await run(endpoint, {"status": 503, "retry_after": 0, "fail_times": 1, "text": "ok now"})
    assert error is None
    assert "".join(c.content for c in chunks) == "ok now"
    assert len(upstream.requests) == 2


async def test_retries_stop_after_the_configured_number(endpoint, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 1
    _, error = await run(endpoint, {"status": 503, "retry_after": 0, "fail_times": 5})
    assert error.code == "upstream_unavailable"
    assert len(upstream.requests) == 2


async def test_a_401_is_never_retried(endpoint, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 2
    _, error = await run(endpoint, {"status": 401, "retry_after": 0, "fail_times": 1})
    assert error.code == "upstream_auth"
    assert len(upstream.requests) == 1


async def test_a_retry_after_longer_than_the_max_wait_is_not_waited_for(endpoint, upstream, settings):
    settings.UPSTREAM_MAX_RETRIES = 2
    settings.UPSTREAM_MAX_RETRY_WAIT = 2
    _, error = await run(endpoint, {"status": 429, "retry_after": 60, "fail_times": 1})
    assert error.code == "upstream_rate_limited"
    assert error.retry_after == 60
    assert len(upstream.requests) == 1


def test_an_auth_error_shows_the_upstream_words_without_any_piece_of_the_key():
    endpoint = Endpoint("http://127.0.0.1:9/v1", KEY)
    for quoted in (f"{KEY[:14]}...{KEY[-4:]}", f"{KEY[:7]}****{KEY[-4:]}", f"{KEY[:10]}…{KEY[-3:]}"):
        error = error_from_object({"message": f"Incorrect API key provided: {quoted}. Check it."}, 401, endpoint)
        assert error.code == "upstream_auth"
        assert "Incorrect API key provided: [redacted]" in words(error)
        assert_no_key(error)
        assert KEY[-4:] not in words(error) and KEY[-3:] not in words(error)


def test_an_error_message_quoting_the_key_is_redacted():
    endpoint = Endpoint("http://127.0.0.1:9/v1", KEY)
    error = error_from_object({"message": f"Bad request made with key {KEY} today"}, 400, endpoint)
    assert error.code == "upstream_error"
    assert "[redacted]" in words(error)
    assert "today" in words(error)
    assert_no_key(error)


def test_a_key_without_a_familiar_prefix_is_redacted_too():
    odd_key = "Zq81-custom-gateway-token"
    endpoint = Endpoint("http://127.0.0.1:9/v1", odd_key)
    error = error_from_object({"message": f"token {odd_key} is not allowed here"}, 400, endpoint)
    assert odd_key not in words(error)
    assert "not allowed here" in words(error)


def test_a_partial_key_quoted_by_the_upstream_is_redacted():
    endpoint = Endpoint("http://127.0.0.1:9/v1", KEY)
    error = error_from_object({"message": "Project key sk-proj-abc1********wxyz is disabled"}, 400, endpoint)
    assert "sk-proj" not in words(error)
    assert "wxyz" not in words(error)


def test_an_invalid_api_key_code_without_a_status_is_upstream_auth():
    error = error_from_object({"code": "invalid_api_key", "message": f"bad {KEY}"}, None, Endpoint("http://x/v1", KEY))
    assert error.code == "upstream_auth"
    assert_no_key(error)


def test_error_objects_of_odd_shapes_still_map():
    endpoint = Endpoint("http://127.0.0.1:9/v1", KEY)
    assert error_from_object(None, 500, endpoint).code == "upstream_unavailable"
    assert error_from_object("plain text", 418, endpoint).code == "upstream_error"
    assert error_from_object(["x"], None, endpoint).code == "upstream_error"
    assert len(error_from_object({"message": "m" * 5000}, 400, endpoint).detail["upstream_message"]) <= 300


def test_the_endpoint_repr_hides_the_key():
    assert KEY not in repr(Endpoint("http://127.0.0.1:9/v1", KEY))
