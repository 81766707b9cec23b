"""Create the first staff member from the environment: no prompt, so a container can run it on start.

ADMIN_USERNAME (required, or nothing is done), ADMIN_PASSWORD (default: a random one, printed
once; a given one must pass the password validators), ADMIN_EMAIL (optional). A superuser is
made unless --role says otherwise. An existing member of that name is left as it is: changing
ADMIN_PASSWORD later does not reset anyone's password.
"""

import os

from django.core.management.base import BaseCommand

from conversations.management.commands.ensure_member import ROLES, ensure


class Command(BaseCommand):
    help = "Create the staff member named by ADMIN_USERNAME / ADMIN_PASSWORD unless it exists."

    def add_arguments(self, parser):
        parser.add_argument("--role", choices=ROLES[:2], default="superuser")

    def handle(self, *args, role, **options):
        username = os.environ.get("ADMIN_USERNAME", "").strip()
        if not username:
            self.stdout.write("ADMIN_USERNAME is not set: no staff member created.")
            return
        password = os.environ.get("ADMIN_PASSWORD") or None
        email = os.environ.get("ADMIN_EMAIL", "").strip()
        ensure(self, username, password, role=role, email=email, validate=True)
