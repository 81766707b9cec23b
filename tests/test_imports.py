"""Moving conversations in and out: export all, import our own export, chatgpt-web's history and
ChatGPT's conversations.json, with their trees; hostile files refused whole; search scoped to the member.

The files in tests/data/imports/ were written by hand from each format's documented shape
(docs/protocol.md, "Import"); the hostile ones are made here."""

from __future__ import annotations

import copy
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from conversations.chat import imports, replies, turns
from conversations.chat.context import branch
from conversations.models import Conversation, Message
from tests.conftest import assert_silent

pytestmark = pytest.mark.django_db(transaction=True)

DATA = Path(__file__).parent / "data" / "imports"


def read(name: str) -> dict | list:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def upload(member, content: bytes | str | dict | list, name: str = "export.json", client: Client | None = None,
           **extra):
    """POST the bytes as a multipart file, as the page's file input sends it."""
    if isinstance(content, dict | list):
        content = json.dumps(content, ensure_ascii=False)
    if isinstance(content, str):
        content = content.encode("utf-8")
    file = SimpleUploadedFile(name, content, content_type="application/json")
    return (client or member.client).post("/api/import", {"file": file}, **extra)


def post_body(member, content: bytes | str | dict | list):
    """POST the file as the raw JSON body."""
    if isinstance(content, dict | list):
        content = json.dumps(content, ensure_ascii=False)
    return member.client.post("/api/import", content, content_type="application/json")


def assert_refused(response, reason: str, code: str = "invalid") -> dict:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["detail"]["reason"] == reason, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def nothing_stored() -> bool:
    return not Conversation.objects.exists() and not Message.objects.exists()


def tree(conversation: Conversation) -> dict:
    """A conversation's shape without ids: each message as the path of (role, text) from its root,
    the branch on screen, and the conversation's own fields."""
    messages = {m.id: m for m in conversation.messages.all()}

    def path(message):
        return tuple((m.role, m.content, json.dumps(m.content_parts), m.reasoning, json.dumps(m.logprobs))
                     for m in branch(messages, message.id))

    return {
        "title": conversation.title, "model": conversation.model, "system_prompt": conversation.system_prompt,
        "params": conversation.params, "created_at": conversation.created_at,
        "paths": sorted(path(m) for m in messages.values()),
        "current": path(messages[conversation.current_leaf_id]) if conversation.current_leaf_id else None,
        "times": sorted(m.created_at for m in messages.values()),
    }


def imported(response) -> list[Conversation]:
    assert response.status_code == 201, response.content
    ids = [item["id"] for item in response.json()["imported"]]
    return [Conversation.objects.get(pk=conversation_id) for conversation_id in ids]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --------------------------------------------------------------------------- our own export


def test_our_export_imports_every_branch_with_its_fields_and_times(alice):
    response = upload(alice, (DATA / "teamchat-export.json").read_bytes())

    assert response.json()["format"] == "teamchat"
    assert [(i["title"], i["messages"]) for i in response.json()["imported"]] == [
        ("翻译产品说明", 5), ("Standup notes", 2)]
    translation, standup = imported(response)
    assert translation.owner == alice.user and standup.owner == alice.user
    assert translation.title_source == "member"  # kept: no automatic title replaces it
    assert translation.model == "qwen2.5-72b-instruct" and translation.provider is None
    assert translation.system_prompt.startswith("你是一名专业的技术翻译")
    assert translation.params == {"temperature": 0.3, "max_tokens": 2048}
    assert translation.created_at == datetime(2026, 11, 28, 2, 10, 44, 512300, tzinfo=UTC)
    assert translation.updated_at == datetime(2026, 11, 28, 2, 14, 9, 4811, tzinfo=UTC)

    by_text = {m.content: m for m in translation.messages.all()}
    question = by_text["Translate: **Presets** let you start a chat with a saved model, system prompt and parameters."]
    answers = [m for m in by_text.values() if m.parent_id == question.id]
    assert sorted(m.content for m in answers) == sorted([
        "**预设**让你用保存好的模型、系统提示词和参数开始一次对话。", "**预设**可以让你以已保存的模型、系统提示词和参数开启新对话"])
    assert all(m.status == "complete" and m.model == "qwen2.5-72b-instruct" for m in answers)
    screenshot = by_text["这张截图里的按钮文字也翻译一下"]
    assert screenshot.content_parts[1]["image_url"]["detail"] == "low"
    assert screenshot.created_at == datetime(2026, 11, 28, 2, 13, 58, 660402, tzinfo=UTC)
    leaf = translation.current_leaf
    assert leaf.content == "按钮上写的是 “Save preset”，译为“保存预设”。" and leaf.parent_id == screenshot.id
    assert leaf.usage["prompt_tokens_details"] == {"cached_tokens": 0} and leaf.finish_reason == "stop"
    assert not Message.objects.exclude(conversation__owner=alice.user).exists()

    detail = alice.client.get(f"/api/conversations/{translation.id}/").json()
    assert [m["content"] for m in detail["messages"]][-1] == leaf.content
    assert len(detail["messages"][1]["sibling_ids"]) == 2


def test_importing_the_same_file_twice_makes_two_copies(alice):
    first = imported(upload(alice, (DATA / "teamchat-export.json").read_bytes()))
    second = imported(upload(alice, (DATA / "teamchat-export.json").read_bytes()))
    assert {c.id for c in first}.isdisjoint({c.id for c in second})
    assert [tree(c) for c in first] == [tree(c) for c in second]


def test_export_all_then_import_gives_the_same_trees(alice, bob, settings):
    settings.DEFAULT_MODEL = "fake-model"
    plans = alice.conversation(title="Plans 计划", system_prompt="Be brief.", params={"temperature": 0.4})
    first = answer(alice, plans, "What should we ship first?", "The import.")
    then = turns.ask(alice.user, plans.id, "And then?", None, uuid.uuid4())
    replies.finish_reply(then.reply.id, then.reply.run_id, text="Presets.", status="complete", finish_reason="stop",
                         reasoning="They asked what comes next; presets were planned.",
                         logprobs=[{"token": "Pres", "logprob": -0.01, "top_logprobs": []}])
    regenerated = turns.regenerate(alice.user, plans.id, None)
    replies.finish_reply(regenerated.reply.id, regenerated.reply.run_id, text="Search, then presets.",
                         status="complete", finish_reason="stop")
    edited = turns.edit(alice.user, plans.id, first.reply.parent_id, "What should we ship last?", None, uuid.uuid4())
    replies.finish_reply(edited.reply.id, edited.reply.run_id, text="The docs.", status="stopped", finish_reason="")
    parts = [{"type": "text", "text": "这是什么？"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    pictures = alice.conversation(title="Pictures")
    turn = turns.ask(alice.user, pictures.id, "这是什么？", parts, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="一张图片。", status="complete", finish_reason="stop")
    alice.conversation(title="Empty")
    bob.conversation(title="bob's own")
    originals = sorted((tree(c) for c in Conversation.objects.filter(owner=alice.user)), key=lambda t: t["title"])

    exported = alice.client.get("/api/export", {"format": "json"})
    assert exported.status_code == 200
    assert exported["Content-Disposition"].startswith('attachment; filename="conversations-')
    data = json.loads(exported.content)
    assert (data["format"], data["version"]) == ("teamchat", 1)
    assert sorted(c["title"] for c in data["conversations"]) == ["Empty", "Pictures", "Plans 计划"]

    response = upload(bob, exported.content, name="conversations.json")
    copies = sorted((tree(c) for c in imported(response)), key=lambda t: t["title"])
    assert copies == originals
    assert Conversation.objects.filter(owner=bob.user).count() == 4


def test_uploaded_images_stay_for_their_owner_and_become_a_placeholder_for_anyone_else(alice, bob, settings,
                                                                                        tmp_path):
    settings.MEDIA_ROOT = tmp_path
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture, format="PNG")
    stored = alice.client.post("/api/uploads/", {"file": SimpleUploadedFile("red.png", picture.getvalue())}).json()
    conversation = alice.conversation(title="Red")
    parts = [{"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": stored["url"]}}]
    turn = turns.ask(alice.user, conversation.id, "What colour?", parts, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text="Red.", status="complete", finish_reason="stop")
    exported = alice.client.get("/api/export").content

    (mine,) = imported(upload(alice, exported))
    question = mine.messages.get(role="user")
    assert question.content_parts[1]["image_url"]["url"] == stored["url"]

    (theirs,) = imported(upload(bob, exported))
    question = theirs.messages.get(role="user")
    assert question.content_parts == [{"type": "text", "text": "What colour?"}, {"type": "text", "text": "[image]"}]
    assert question.content == "What colour?\n[image]"
    assert stored["id"] not in json.dumps(list(theirs.messages.values_list("content_parts", flat=True)))


def test_a_single_conversation_export_imports_too(alice, bob):
    conversation = alice.conversation(title="One")
    answer(alice, conversation, "hello", "hi there")
    exported = alice.client.get(f"/api/conversations/{conversation.id}/export", {"format": "json"})
    data = json.loads(exported.content)
    assert (data["format"], data["version"], data["id"]) == ("teamchat", 1, str(conversation.id))

    (copy_,) = imported(upload(bob, exported.content))
    conversation.refresh_from_db()
    assert tree(copy_) == tree(conversation)


def answer(member, conversation, question: str, text: str):
    turn = turns.ask(member.user, conversation.id, question, None, uuid.uuid4())
    replies.finish_reply(turn.reply.id, turn.reply.run_id, text=text, status="complete", finish_reason="stop")
    return turn


def test_an_export_from_a_newer_version_is_refused(alice):
    data = read("teamchat-export.json")
    data["version"] = 2
    assert_refused(upload(alice, data), "version")
    assert nothing_stored()


# --------------------------------------------------------------------------- chatgpt-web


def chatgpt_web_wrappings():
    """The export as its Export button writes it ({"data": store, "expire": null}), the bare store,
    and the store under chatStorage (exports of older releases)."""
    wrapped = read("chatgpt-web-chat-store.json")
    store = wrapped["data"]
    return {"as exported": wrapped, "bare": store, "chatStorage": {"chatStorage": copy.deepcopy(store)}}


@pytest.mark.parametrize("wrapping", ["as exported", "bare", "chatStorage"])
def test_chatgpt_web_history_imports_each_chat_as_a_conversation(alice, wrapping, settings):
    settings.DEFAULT_MODEL = "house-model"
    response = upload(alice, chatgpt_web_wrappings()[wrapping], name="chat-store_2023-4-15.json")

    assert response.json()["format"] == "chatgpt-web"
    report, regex = imported(response)
    assert (report.title, regex.title) == ("周报怎么写", "Regex for dates")
    assert report.model == "house-model" and report.provider is None

    messages = list(report.messages.order_by("created_at"))
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0].content == "帮我写一份本周工作周报的提纲，我是后端工程师。"
    assert "Request failed" not in " ".join(m.content for m in messages)  # chatgpt-web's error, not the model's
    assert [m.parent_id for m in messages] == [None] + [m.id for m in messages[:-1]]
    assert report.current_leaf_id == messages[-1].id
    assert all(m.status == "complete" for m in messages)
    # Its toLocaleString() times, in the server's time zone: zh-CN's and en-US's shapes.
    assert messages[0].created_at == datetime(2023, 4, 15, 10, 52, 3, tzinfo=UTC)
    assert report.updated_at == datetime(2023, 4, 15, 10, 56, 30, tzinfo=UTC)
    assert regex.messages.order_by("created_at").first().created_at == datetime(2023, 4, 14, 10, 43, 31, tzinfo=UTC)
    assert "\\d{4}" in regex.current_leaf.content


def test_a_chatgpt_web_chat_not_yet_named_is_titled_by_its_first_question(alice):
    data = read("chatgpt-web-chat-store.json")
    data["data"]["history"][1]["title"] = "New Chat"
    _, regex = imported(upload(alice, data))
    assert regex.title == "Write a regex that matches dates like 2023-04-14."
    assert regex.title_source == "first_words"


# --------------------------------------------------------------------------- ChatGPT


def test_chatgpt_conversations_json_keeps_its_branches_and_skips_what_is_not_conversation(alice):
    response = upload(alice, (DATA / "chatgpt-conversations.json").read_bytes(), name="conversations.json")

    assert response.json()["format"] == "chatgpt"
    python, bread = imported(response)
    assert python.title == "Python 列表去重" and python.model == "gpt-4o"
    assert python.created_at == at(1712123456.789012) and python.updated_at == at(1712124012.345678)
    by_text = {m.content: m for m in python.messages.all()}
    assert len(by_text) == 7  # the root, the hidden system message, the code sent to python and its output are not
    question = by_text["如何在 Python 中去掉列表里的重复元素，同时保持原来的顺序？"]
    assert question.parent_id is None and question.created_at == at(1712123456.901)
    first, second = sorted((m for m in by_text.values() if m.parent_id == question.id), key=lambda m: m.created_at)
    assert first.content.startswith("可以用 `dict.fromkeys`") and second.content.startswith("从 Python 3.7 起")
    assert first.model == "gpt-4o" and first.status == "complete"
    run_it = by_text["能运行一下看看结果吗？"]
    assert run_it.parent_id == second.id
    leaf = python.current_leaf
    assert leaf.content.startswith("运行结果是 `[3, 1, 2]`")
    assert leaf.parent_id == run_it.id  # hung over the skipped tool call and its output

    # An edited question: two siblings at the root (under the skipped custom instructions).
    questions = list(bread.messages.filter(parent=None).order_by("created_at"))
    assert [q.content for q in questions] == [
        "[image]\nWhy is the crust so pale?", "[image]\nWhy is the crust so pale? I baked it at 200 °C for 35 minutes."]
    assert bread.current_leaf.parent_id == questions[1].id
    assert bread.model == "gpt-4o-mini"
    assert not bread.messages.filter(content__contains="I bake at home").exists()

    detail = alice.client.get(f"/api/conversations/{bread.id}/").json()
    assert detail["messages"][0]["sibling_ids"] == [str(q.id) for q in questions]


def test_a_chatgpt_current_node_that_is_skipped_shows_its_nearest_kept_ancestor(alice):
    data = read("chatgpt-conversations.json")[:1]
    data[0]["current_node"] = "c3b2a190-8f7e-4d6c-b5a4-938271605f4e"  # the tool's output
    (python,) = imported(upload(alice, data))
    assert python.current_leaf.content == "能运行一下看看结果吗？"


# --------------------------------------------------------------------------- announcements


async def test_each_imported_conversation_is_announced_to_the_members_tabs_only(alice, bob, sockets):
    tab = sockets(alice, None, path="/ws/member/")
    assert (await tab.connect())[0]
    bobs = sockets(bob, None, path="/ws/member/")
    assert (await bobs.connect())[0]

    response = await database_sync_to_async(upload)(alice, (DATA / "chatgpt-conversations.json").read_bytes())
    assert response.status_code == 201

    heard = [await tab.recv(), await tab.recv()]
    assert [f["type"] for f in heard] == ["conversation_created"] * 2
    assert [f["conversation"]["id"] for f in heard] == [i["id"] for i in response.json()["imported"]]
    assert heard[0]["conversation"]["title"] == "Python 列表去重"
    await assert_silent(bobs, bob)


async def test_a_failure_while_writing_stores_nothing_and_announces_nothing(alice, sockets, monkeypatch):
    tab = sockets(alice, None, path="/ws/member/")
    assert (await tab.connect())[0]
    parsed = imports.parse((DATA / "chatgpt-conversations.json").read_bytes())

    def refuse(*args, **kwargs):  # the database refusing the messages, after the conversations went in
        raise RuntimeError("the database refused")

    monkeypatch.setattr(Message.objects, "bulk_create", refuse)
    with pytest.raises(RuntimeError):
        await database_sync_to_async(imports.write)(alice.user, parsed)
    assert await database_sync_to_async(nothing_stored)()
    await assert_silent(tab, alice)


async def test_a_refused_file_announces_nothing(alice, sockets):
    tab = sockets(alice, None, path="/ws/member/")
    assert (await tab.connect())[0]
    data = read("chatgpt-conversations.json")
    data[1]["mapping"]["d1c2b3a4-0005-4000-8000-000000000005"]["message"]["content"]["parts"] = [7]
    response = await database_sync_to_async(upload)(alice, data)
    assert response.status_code == 400
    await assert_silent(tab, alice)


# --------------------------------------------------------------------------- hostile files


def test_a_file_over_the_limit_is_refused_before_it_is_parsed(alice, settings):
    settings.IMPORT_MAX_BYTES = 4096
    big = json.dumps(read("teamchat-export.json")).encode() + b" " * 4096

    assert_refused(upload(alice, big), "too_large", "too_large")
    assert_refused(post_body(alice, big), "too_large", "too_large")
    assert nothing_stored()


def test_a_declared_length_far_past_the_limit_is_refused_on_the_length_alone(alice, settings, monkeypatch):
    settings.IMPORT_MAX_BYTES = 4096

    def never(raw):
        raise AssertionError("the file was read")

    monkeypatch.setattr(imports, "parse", never)
    huge = b"[" + b" " * (200 * 1024) + b"]"
    assert_refused(post_body(alice, huge), "too_large", "too_large")
    assert_refused(upload(alice, huge), "too_large", "too_large")


def test_the_upload_stops_counting_at_the_limit(alice, settings, monkeypatch):
    """The multipart handler itself refuses past the limit (what a declared length cannot show)."""
    settings.IMPORT_MAX_BYTES = 4096
    from conversations.web import imports as web_imports

    monkeypatch.setattr(web_imports, "MULTIPART_OVERHEAD", 10 * 1024 * 1024)  # let the length check pass
    received = []
    original = web_imports.BoundedUpload.receive_data_chunk

    def counting(self, raw_data, start):
        received.append(len(raw_data))
        return original(self, raw_data, start)

    monkeypatch.setattr(web_imports.BoundedUpload, "receive_data_chunk", counting)
    assert_refused(upload(alice, b"[" + b" " * (1024 * 1024) + b"]"), "too_large", "too_large")
    assert received and sum(received) <= 4096 + 64 * 1024  # stopped at the first chunk past the limit
    assert nothing_stored()


@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    "[" * 100_000,  # not even closed
])
def test_nesting_100000_deep_is_refused_without_a_recursion_error(alice, raw, monkeypatch):
    def parser_reached(*args, **kwargs):
        raise AssertionError("the json module was given the file")

    # The scan refuses it before the json module (whose own recursion limit is not the defence).
    monkeypatch.setattr(imports, "json", SimpleNamespace(loads=parser_reached, JSONDecodeError=json.JSONDecodeError))
    assert_refused(upload(alice, raw), "too_deep")
    assert nothing_stored()


def test_deep_nesting_inside_a_real_file_is_refused(alice):
    data = read("teamchat-export.json")
    text = json.dumps(data).replace('"usage": {"prompt_tokens": 38',
                                    '"usage": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "prompt_tokens": 38')
    assert_refused(upload(alice, text), "too_deep")
    assert nothing_stored()


def test_brackets_inside_strings_do_not_count_as_nesting(alice):
    data = read("teamchat-export.json")
    data["conversations"][1]["messages"][0]["content"] = "[[[[" * 1000 + ' \\" {{{{ \\\\' * 100
    (_, standup) = imported(upload(alice, data))
    assert standup.messages.filter(content__startswith="[[[[").exists()


def test_measure_counts_depth_and_containers_outside_strings():
    assert imports.measure('{"a": [1, {"b": "[[[{{"}], "c\\"[": []}') == (3, 4)
    assert imports.measure('"just a string"') == (0, 0)
    assert imports.measure('["\\\\", ["\\\\\\"]"]]') == (2, 2)


def test_too_many_objects_are_refused(alice, monkeypatch):
    monkeypatch.setattr(imports, "MAX_CONTAINERS", 1000)
    assert_refused(upload(alice, "[" + ",".join(["{}"] * 1001) + "]"), "too_large", "too_large")
    assert nothing_stored()


def test_a_cycle_in_a_chatgpt_mapping_is_refused(alice):
    data = read("chatgpt-conversations.json")
    mapping = data[1]["mapping"]
    mapping["d1c2b3a4-0002-4000-8000-000000000002"]["parent"] = "d1c2b3a4-0003-4000-8000-000000000003"
    error = assert_refused(upload(alice, data), "cycle")
    assert error["detail"]["conversation"] == 2
    assert error["message"].startswith("conversation 2, message ")
    assert nothing_stored()


def test_a_node_that_is_its_own_parent_is_a_cycle(alice):
    data = read("chatgpt-conversations.json")
    data[0]["mapping"]["aaa1f0c2-7d1e-4a0b-9a51-3c1d2e4f5a60"]["parent"] = "aaa1f0c2-7d1e-4a0b-9a51-3c1d2e4f5a60"
    assert_refused(upload(alice, data), "cycle")
    assert nothing_stored()


def test_a_cycle_in_our_own_format_is_refused_too(alice):
    data = read("teamchat-export.json")
    first = data["conversations"][1]["messages"]
    first[0]["parent_id"] = first[1]["id"]
    assert_refused(upload(alice, data), "cycle")
    assert nothing_stored()


def mutate(name: str, change) -> bytes:
    data = read(name)
    change(data)
    return json.dumps(data, ensure_ascii=False).encode()


def set_path(data, path: tuple, value):
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


CHATGPT_NODE = ("mapping", "0f1e2d3c-4b5a-4968-8776-655443322110")
OUR_MESSAGE = ("conversations", 0, "messages", 1)


@pytest.mark.parametrize(("name", "path", "value", "where", "words"), [
    # The top and the conversations.
    ("teamchat-export.json", ("conversations",), {"a": 1}, None, "conversations must be a list"),
    ("teamchat-export.json", ("conversations", 1), [1, 2], (2, None), "conversation must be an object"),
    ("teamchat-export.json", ("conversations", 0, "title"), 42, (1, None), "title must be a string"),
    ("teamchat-export.json", ("conversations", 0, "params"), [0.3], (1, None), "params must be an object"),
    ("teamchat-export.json", ("conversations", 0, "params"), {"temperature": 9}, (1, None), "temperature"),
    ("teamchat-export.json", ("conversations", 0, "messages"), "none", (1, None), "messages must be a list"),
    # Messages, and deeper.
    ("teamchat-export.json", OUR_MESSAGE, "text", (1, 2), "message must be an object"),
    ("teamchat-export.json", (*OUR_MESSAGE, "content"), 12, (1, 2), "content must be a string"),
    ("teamchat-export.json", (*OUR_MESSAGE, "content"), [{"type": "text", "text": 5}], (1, 2), "text must be"),
    ("teamchat-export.json", (*OUR_MESSAGE, "role"), "tool", (1, 2), "role must be"),
    ("teamchat-export.json", (*OUR_MESSAGE, "parent_id"), ["x"], (1, 2), "parent_id must be"),
    ("teamchat-export.json", (*OUR_MESSAGE, "parent_id"), "no-such-id", (1, 2), "'no-such-id'"),
    ("teamchat-export.json", (*OUR_MESSAGE, "created_at"), "yesterday", (1, 2), "created_at must be"),
    ("teamchat-export.json", (*OUR_MESSAGE, "usage"), [1, 2], (1, 2), "usage must be an object"),
    ("teamchat-export.json", (*OUR_MESSAGE, "content"), [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}],
     (1, 2), "image URL"),
    ("chatgpt-conversations.json", (0, "mapping"), [], (1, None), "mapping must be an object"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE), [], (1, 4), "node must be an object"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message"), [], (1, 4), "message must be an object"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "children"), "none", (1, 4), "children must be a list"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message", "author", "role"), 5, (1, 4), "role must be a string"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message", "content", "parts"), [None], (1, 4), "parts must be"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message", "content"), "text", (1, 4), "content must be an object"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message", "create_time"), "today", (1, 4), "create_time must be"),
    ("chatgpt-conversations.json", (0, *CHATGPT_NODE, "message", "create_time"), 1e300, (1, 4), "create_time must be"),
    ("chatgpt-conversations.json", (1, "current_node"), "nowhere", (2, None), "current_node"),
    ("chatgpt-conversations.json", (1, "title"), {"t": 1}, (2, None), "title must be"),
    ("chatgpt-web-chat-store.json", ("data", "chat", 0, "data", 2, "text"), 3, (1, 3), "text must be a string"),
    ("chatgpt-web-chat-store.json", ("data", "chat", 1, "data", 0, "inversion"), "yes", (2, 1), "inversion must be"),
    ("chatgpt-web-chat-store.json", ("data", "chat", 1, "data"), {"0": {}}, (2, None), "data must be a list"),
    ("chatgpt-web-chat-store.json", ("data", "chat", 0, "data", 0, "dateTime"), 1681527123, (1, 1), "dateTime must be"),
])
def test_wrong_types_anywhere_are_refused_saying_where(alice, name, path, value, where, words):
    response = upload(alice, mutate(name, lambda data: set_path(data, path, value)))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert words in error["message"], error["message"]
    conversation, message = where or (None, None)
    assert error["detail"].get("conversation") == conversation
    assert error["detail"].get("message") == message
    if message:
        assert error["message"].startswith(f"conversation {conversation}, message {message}: ")
    assert nothing_stored()


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff"])
@pytest.mark.parametrize("name", ["teamchat-export.json", "chatgpt-conversations.json", "chatgpt-web-chat-store.json"])
def test_text_postgres_cannot_store_is_refused(alice, name, escape):
    marker = {"teamchat-export.json": "Standup notes", "chatgpt-conversations.json": "Why is the crust so pale?",
              "chatgpt-web-chat-store.json": "Write a regex"}[name]
    text = (DATA / name).read_text(encoding="utf-8")
    assert marker in text
    error = assert_refused(upload(alice, text.replace(marker, marker + escape, 1)), "bad_text")
    assert error["detail"]["conversation"] == 2
    assert nothing_stored()


def test_a_bad_third_conversation_creates_nothing_of_the_first_two(alice):
    data = read("teamchat-export.json")
    data["conversations"].append(copy.deepcopy(data["conversations"][1]))
    data["conversations"][2]["messages"][1]["content"] = None
    error = assert_refused(upload(alice, data), "wrong_type")
    assert error["message"].startswith("conversation 3, message 2: content must be")
    assert nothing_stored()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json at all", "not_json"),
    (b'{"format": "teamchat", "conversations": [', "not_json"),
    (b"\xff\xfe{\x00}\x00", "not_utf8"),
    (b'[{"mapping": {}, "title": NaN}]', "not_json"),
    (b'{"format": "teamchat", "version": 1, "conversations": [{"params": {"temperature": 1e999}}]}', "not_json"),
    (b'{"hello": "world"}', "unknown_format"),
    (b'"a string"', "unknown_format"),
    (b"42", "unknown_format"),
    (b"[1, 2, 3]", "unknown_format"),
    (b"[]", "empty"),
    (b'{"format": "teamchat", "version": 1, "conversations": []}', "empty"),
    (b'{"data": {"history": [], "chat": []}, "expire": null}', "empty"),
])
def test_what_is_not_an_export_is_refused(alice, raw, reason):
    assert_refused(upload(alice, raw), reason)
    assert nothing_stored()


def test_more_conversations_or_messages_than_the_limits_are_refused(alice, settings):
    settings.IMPORT_MAX_CONVERSATIONS = 1
    assert_refused(upload(alice, (DATA / "chatgpt-conversations.json").read_bytes()), "too_many_conversations")
    settings.IMPORT_MAX_CONVERSATIONS = 10
    settings.IMPORT_MAX_MESSAGES = 6  # the first conversation's mapping has 11 nodes
    assert_refused(upload(alice, (DATA / "chatgpt-conversations.json").read_bytes()), "too_many_messages")
    settings.IMPORT_MAX_MESSAGES = 6  # 5 + 2 messages
    assert_refused(upload(alice, (DATA / "teamchat-export.json").read_bytes()), "too_many_messages")
    assert nothing_stored()
    settings.IMPORT_MAX_MESSAGES = 7
    assert upload(alice, (DATA / "teamchat-export.json").read_bytes()).status_code == 201


def test_a_raw_json_body_imports_like_a_file(alice):
    response = post_body(alice, (DATA / "chatgpt-web-chat-store.json").read_bytes())
    assert response.status_code == 201
    assert response.json()["format"] == "chatgpt-web"
    assert len(response.json()["imported"]) == 2


def test_a_file_with_a_byte_order_mark_imports(alice):
    response = upload(alice, b"\xef\xbb\xbf" + (DATA / "teamchat-export.json").read_bytes())
    assert response.status_code == 201


# --------------------------------------------------------------------------- the API's errors


def test_import_needs_a_member_a_post_and_a_file(alice):
    anonymous = Client()
    response = upload(None, b"[]", client=anonymous)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    response = alice.client.get("/api/import")
    assert response.status_code == 405 and response["Allow"] == "POST"
    response = alice.client.post("/api/import", {"other": "x"})
    assert response.status_code == 400 and response.json()["error"]["fields"]["file"]
    response = alice.client.post("/api/import", "a=b", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    response = alice.client.post("/api/import", b"--x\r\nbroken", content_type="multipart/form-data; boundary=")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert nothing_stored()


def test_import_checks_the_csrf_token(alice):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice.user)
    body = (DATA / "teamchat-export.json").read_bytes()
    response = upload(alice, body, client=strict)
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf"
    response = strict.post("/api/import", body, content_type="application/json")
    assert response.status_code == 403
    assert nothing_stored()

    assert strict.get("/").status_code == 200
    token = strict.cookies[django_settings.CSRF_COOKIE_NAME].value
    assert upload(alice, body, client=strict, HTTP_X_CSRFTOKEN=token).status_code == 201


# --------------------------------------------------------------------------- export all


def test_export_all_as_json_has_every_branch_of_my_conversations_only(alice, bob):
    mine = alice.conversation(title="mine")
    answer(alice, mine, "question", "answer")
    regenerated = turns.regenerate(alice.user, mine.id, None)
    replies.finish_reply(regenerated.reply.id, regenerated.reply.run_id, text="another answer", status="complete",
                         finish_reason="stop")
    theirs = bob.conversation(title="bob's secret")
    answer(bob, theirs, "bob's question", "bob's answer")

    response = alice.client.get("/api/export")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    data = json.loads(response.content)
    (conversation,) = data["conversations"]
    assert conversation["id"] == str(mine.id)
    assert [m["content"] for m in conversation["messages"]] == ["question", "answer", "another answer"]
    assert conversation["current_leaf_id"] == conversation["messages"][2]["id"]
    assert b"bob" not in response.content


def test_export_all_as_markdown_has_each_current_branch_in_turn(alice, bob):
    first = alice.conversation(title="First 第一")
    answer(alice, first, "one?", "uno")
    regenerated = turns.regenerate(alice.user, first.id, None)
    replies.finish_reply(regenerated.reply.id, regenerated.reply.run_id, text="eins", status="complete",
                         finish_reason="stop")
    second = alice.conversation(title="Second")
    answer(alice, second, "two?", "dos")
    theirs = bob.conversation(title="bob's")
    answer(bob, theirs, "bob asks", "bob hears")

    response = alice.client.get("/api/export", {"format": "md"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"].endswith('.md"')
    text = response.content.decode()
    assert text.index("# Second") < text.index("# First 第一")  # newest first, as the list
    assert "eins" in text and "uno" not in text  # the branch on screen
    assert "dos" in text and "bob" not in text


def test_export_all_errors_are_json(alice):
    response = alice.client.get("/api/export", {"format": "pdf"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert Client().get("/api/export").status_code == 401
    response = alice.client.post("/api/export")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- search


def test_search_finds_chinese_text_in_titles_and_messages(alice):
    by_title = alice.conversation(title="周报模板")
    by_message = alice.conversation(title="Notes")
    answer(alice, by_message, "帮我写一份周报", "好的")
    alice.conversation(title="别的")

    found = alice.client.get("/api/conversations/", {"q": "周报"}).json()
    assert sorted(c["id"] for c in found) == sorted([str(by_title.id), str(by_message.id)])


def test_search_never_matches_another_members_text(alice, bob):
    theirs = bob.conversation(title="bob's plans")
    answer(bob, theirs, "秘密计划 secret plan", "known only to bob")
    mine = alice.conversation(title="mine")
    answer(alice, mine, "an ordinary question", "an ordinary answer")

    for query in ("秘密计划", "secret plan", "known only", "bob's plans"):
        assert alice.client.get("/api/conversations/", {"q": query}).json() == []
    assert [c["id"] for c in bob.client.get("/api/conversations/", {"q": "秘密"}).json()] == [str(theirs.id)]


def test_search_finds_imported_conversations(alice):
    upload(alice, (DATA / "chatgpt-conversations.json").read_bytes())
    found = alice.client.get("/api/conversations/", {"q": "dict.fromkeys"}).json()
    assert [c["title"] for c in found] == ["Python 列表去重"]
