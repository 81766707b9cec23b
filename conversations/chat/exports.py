"""A conversation as a downloadable file: JSON (the whole tree) or Markdown (the branch)."""

from conversations.chat.context import load_branch
from conversations.chat.serializers import conversation_dict, message_dict
from conversations.models import Conversation


def as_json(conversation: Conversation) -> dict:
    data = conversation_dict(conversation)
    data["current_leaf_id"] = str(conversation.current_leaf_id) if conversation.current_leaf_id else None
    data["messages"] = [message_dict(m) for m in conversation.messages.order_by("created_at")]
    return data


def as_markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", "", f"Model: {conversation.model}", ""]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    for message in load_branch(conversation, conversation.current_leaf_id):
        heading = "You" if message.role == "user" else message.role.capitalize()
        if message.status != "complete":
            heading += f" ({message.status})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)
