"""Creating, changing and deleting conversations: the same actions for every edge.

Each runs in one transaction and announces itself to every socket of the
member once it commits (chat/broadcast.py), so a conversation made, renamed or
deleted in one tab shows in the member's other tabs, and a deleted one's
open tabs are told and its reply is stopped at once.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from conversations.chat import broadcast, presets
from conversations.chat.access import get_conversation
from conversations.chat.serializers import conversation_dict
from conversations.models import AuditEntry, Conversation, Message, Preset

EDITABLE = ("title", "model", "provider", "system_prompt", "params")


def announce_changed(conversation: Conversation, kind: str) -> None:
    """Tell the member's sockets: `conversation_created` or `conversation_updated`."""
    broadcast.announce(
        broadcast.member_group(conversation.owner_id),
        broadcast.member_event({"type": kind, "conversation": conversation_dict(conversation)}),
    )


def create_conversation(member, *, title: str = "", model: str = "", provider=None, system_prompt: str | None = None,
                        params: dict | None = None, preset: Preset | None = None) -> Conversation:
    """A new conversation from `preset`, else from the member's default preset (chat/presets.py).

    What the caller gives wins over the preset's, field by field: a `model` (with its
    `provider`), a `system_prompt`, `params` (None: not given). Without a model from
    either, the member's default model, else the team's.
    """
    start = presets.starting_point(member, preset, with_model=not model)
    if not model:
        model, provider = start.model, start.provider
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=member, title=title, title_source=Conversation.TitleSource.MEMBER if title else "",
            model=model, provider=provider,
            system_prompt=start.system_prompt if system_prompt is None else system_prompt,
            params=start.params if params is None else params,
        )
        announce_changed(conversation, "conversation_created")
    return conversation


def update_conversation(member, conversation_id, changes: dict) -> Conversation:
    """Apply validated `changes` (any of EDITABLE); announced only when something changed."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        conversation = get_conversation(member, conversation_id, lock=True)
        changed = [name for name, value in changes.items() if getattr(conversation, name) != value]
        if changed:
            for name in changed:
                setattr(conversation, name, changes[name])
            if "title" in changed:  # the member named it: no automatic title replaces theirs
                conversation.title_source = Conversation.TitleSource.MEMBER
                changed.append("title_source")
            conversation.updated_at = timezone.now()
            conversation.save(update_fields=[*changed, "updated_at"])
            announce_changed(conversation, "conversation_updated")
    return conversation


def delete_conversation(member, conversation_id) -> None:
    """Delete it with its messages; its tabs are told and its reply is stopped (usage stays)."""
    with transaction.atomic():
        conversation = get_conversation(member, conversation_id, lock=True)
        conversation_id = conversation.id
        conversation.delete()
        broadcast.announce(
            broadcast.member_group(member.pk),
            broadcast.member_event({"type": "conversation_deleted", "conversation_id": str(conversation_id)},
                                   conversation_id=conversation_id, closes=True),
        )
        # Whatever streams there ends now; its final write finds no row and says nothing more.
        broadcast.announce(broadcast.control_group(conversation_id), {"type": "reply.stop", "message_id": None})


def past_retention(cutoff):
    """Conversations with no activity since `cutoff` and no reply streaming."""
    return Conversation.objects.filter(updated_at__lt=cutoff).exclude(
        pk__in=Message.objects.filter(status=Message.Status.STREAMING).values("conversation_id"))


def purge_batch(cutoff, *, limit: int = 500, actor_name: str, retention_days: int) -> tuple[int, int]:
    """Delete up to `limit` conversations past retention, with one audit entry naming them, in one
    transaction; their members' tabs are told. Returns (conversations, messages) deleted."""
    with transaction.atomic():
        batch = list(past_retention(cutoff).select_for_update(skip_locked=True, of=("self",))
                     .order_by("updated_at").values_list("pk", "owner_id")[:limit])
        if not batch:
            return 0, 0
        ids = [pk for pk, _owner in batch]
        messages = Message.objects.filter(conversation_id__in=ids).count()
        Conversation.objects.filter(pk__in=ids).delete()
        AuditEntry.record(AuditEntry.Action.PURGE, actor_name=actor_name, detail={
            "retention_days": retention_days, "cutoff": cutoff.isoformat(), "conversations": len(ids),
            "messages": messages, "conversation_ids": [str(pk) for pk in ids],
        })
        for conversation_id, owner_id in batch:
            broadcast.announce(
                broadcast.member_group(owner_id),
                broadcast.member_event({"type": "conversation_deleted", "conversation_id": str(conversation_id)},
                                       conversation_id=conversation_id, closes=True),
            )
    return len(ids), messages
