"""One member's data as JSON: the account, every conversation (the whole tree), usage, their
uploaded images (described), and the audit entries about them. The export itself is written to
the audit log."""

import json
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from conversations.chat import exports
from conversations.models import Attachment, AuditEntry, Conversation, Usage

ACTOR = "command: export_member_data"


def member_data(member) -> dict:
    conversations = Conversation.objects.filter(owner=member).order_by("created_at")
    usage = Usage.objects.filter(member=member).order_by("created_at")
    reviews = AuditEntry.objects.filter(owner_id=member.pk).order_by("at", "id")
    return {
        "exported_at": timezone.now().isoformat(),
        "member": {
            "username": member.get_username(), "email": member.email, "first_name": member.first_name,
            "last_name": member.last_name, "date_joined": member.date_joined.isoformat(),
            "last_login": member.last_login.isoformat() if member.last_login else None,
            "is_active": member.is_active, "language": member.language, "theme": member.theme,
            "default_model": member.default_model,
        },
        "conversations": exports.all_as_json(list(conversations))["conversations"],
        "usage": [{
            "created_at": u.created_at.isoformat(), "conversation_id": str(u.conversation_id or "") or None,
            "model": u.model, "provider": u.provider, "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "estimated": u.estimated, "status": u.status,
            "ttft_ms": u.ttft_ms, "duration_ms": u.duration_ms,
        } for u in usage],
        # The images they uploaded, described (the files stay on the server, at these addresses).
        "attachments": [{"url": a.url, "content_type": a.content_type, "width": a.width, "height": a.height,
                         "size": a.size, "created_at": a.created_at.isoformat()}
                        for a in Attachment.objects.filter(owner=member).order_by("created_at")],
        # When staff read this member's conversations (who did is for superusers: docs/security.md).
        "reviews": [{"at": e.at.isoformat(), "action": e.action,
                     "conversation_id": str(e.conversation_id) if e.conversation_id else None} for e in reviews],
    }


class Command(BaseCommand):
    help = "Write one member's data (account, conversations, usage, reviews) as JSON."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--output", "-o", help="a file to write (default: standard output)")

    def handle(self, *args, username, output, **options):
        try:
            member = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No member named {username!r}.") from None
        with transaction.atomic():  # the reading and its record stand or fall together
            data = member_data(member)
            AuditEntry.record(AuditEntry.Action.MEMBER_EXPORT, actor_name=ACTOR, owner=member,
                              detail={"conversations": len(data["conversations"])})
            text = json.dumps(data, ensure_ascii=False, indent=2)
        if output:
            with open(output, "w", encoding="utf-8") as file:
                file.write(text + "\n")
            self.stderr.write(f"Wrote {len(data['conversations'])} conversations of {username!r} to {output}.")
        else:
            sys.stdout.write(text + "\n")
