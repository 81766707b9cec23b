"""Make sure someone can sign in to a fresh install."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a staff member if there is no user yet (or the named one), and print the password."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", help="default: a random one, printed once")
        parser.add_argument("--if-no-users", action="store_true", help="do nothing when any user exists")

    def handle(self, *args, username, password, if_no_users, **options):
        users = get_user_model().objects
        if if_no_users and users.exists():
            return
        if users.filter(username=username).exists():
            self.stdout.write(f"Member {username!r} exists already.")
            return
        password = password or secrets.token_urlsafe(12)
        users.create_superuser(username=username, password=password, email="")
        self.stdout.write(self.style.SUCCESS(f"Sign in as {username!r} with password {password!r}."))
