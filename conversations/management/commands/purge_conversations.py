"""Delete conversations with no activity for RETENTION_DAYS days (run it daily, from cron).

Each batch is deleted in one transaction with one audit entry naming its conversations;
their members' open tabs are told. Usage rows and the audit log are kept.
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from conversations.chat.conversations import past_retention, purge_batch
from conversations.models import Message

ACTOR = "command: purge_conversations"


class Command(BaseCommand):
    help = "Delete conversations whose last activity is older than RETENTION_DAYS (0: keep forever)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="override RETENTION_DAYS for this run")
        parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
        parser.add_argument("--batch", type=int, default=500, help="conversations per transaction")

    def handle(self, *args, days, dry_run, batch, **options):
        days = settings.RETENTION_DAYS if days is None else days
        if days < 0 or batch < 1:
            raise CommandError("--days must be at least 0 and --batch at least 1.")
        if days == 0:
            self.stdout.write("RETENTION_DAYS is 0: conversations are kept forever; nothing to purge.")
            return
        cutoff = timezone.now() - timedelta(days=days)
        if dry_run:
            stale = past_retention(cutoff)
            messages = Message.objects.filter(conversation__in=stale).count()
            self.stdout.write(f"Would delete {stale.count()} conversations ({messages} messages) "
                              f"with no activity since {cutoff:%Y-%m-%d %H:%M} UTC.")
            return
        conversations = messages = 0
        while True:
            done, gone = purge_batch(cutoff, limit=batch, actor_name=ACTOR, retention_days=days)
            if not done:
                break
            conversations += done
            messages += gone
        self.stdout.write(f"Deleted {conversations} conversations ({messages} messages) "
                          f"with no activity since {cutoff:%Y-%m-%d %H:%M} UTC.")
