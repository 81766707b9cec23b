"""A conversation as a downloadable file: JSON (the whole tree) or Markdown (the branch)."""

from conversations.chat.context import load_branch
from conversations.chat.serializers import conversation_dict, message_dict
from conversations.models import Conversation


def as_json(conversation: Conversation, *, review: bool = False) -> dict:
    """The conversation and every message; `review` adds what staff review needs: the owner,
    and each reply's recorded request (what the model was sent)."""
    data = conversation_dict(conversation)
    data["current_leaf_id"] = str(conversation.current_leaf_id) if conversation.current_leaf_id else None
    if review:
        data["owner"] = conversation.owner.get_username()
    messages = []
    for message in conversation.messages.order_by("created_at"):
        item = message_dict(message)
        if review and message.request is not None:
            item["request"] = message.request
        messages.append(item)
    data["messages"] = messages
    return data


def as_markdown(conversation: Conversation, *, review: bool = False) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    if review:
        lines += [f"Owner: {conversation.owner.get_username()}", ""]
    lines += [f"Model: {conversation.model}", ""]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    for message in load_branch(conversation, conversation.current_leaf_id):
        if message.role == "user":
            heading = conversation.owner.get_username() if review else "You"
        else:
            heading = message.role.capitalize()
        if message.status != "complete":
            heading += f" ({message.status})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)
