"""Make sure someone can sign in to a fresh install."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

ROLES = ("superuser", "staff", "member")


def ensure(command: BaseCommand, username: str, password: str | None, *, role: str = "superuser",
           email: str = "", validate: bool = False) -> bool:
    """Create the member unless the name is taken; print how to sign in. True if created.

    A random password is made (and printed once) when none is given. With `validate`, a given
    password must pass the site's password validators: an operator's typo should not become
    the superuser's password.
    """
    users = get_user_model().objects
    if users.filter(username=username).exists():
        command.stdout.write(f"Member {username!r} exists already.")
        return False
    shown = password is None
    password = password or secrets.token_urlsafe(12)
    if validate and not shown:
        try:
            validate_password(password, get_user_model()(username=username, email=email))
        except ValidationError as error:
            raise CommandError(f"The password for {username!r} is refused: {' '.join(error.messages)}") from None
    flags = {"superuser": {"is_staff": True, "is_superuser": True}, "staff": {"is_staff": True},
             "member": {}}[role]
    try:
        with transaction.atomic():  # two processes starting at once: one creates, the other finds it
            users.create_user(username=username, password=password, email=email, **flags)
    except IntegrityError:
        command.stdout.write(f"Member {username!r} exists already.")
        return False
    said = f"password {password!r}" if shown else "the password given"
    command.stdout.write(command.style.SUCCESS(f"Created {role} {username!r}: sign in with {said}."))
    return True


class Command(BaseCommand):
    help = "Create a member (a superuser unless --role says otherwise) if there is no user yet, or the named one."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", help="default: a random one, printed once")
        parser.add_argument("--role", choices=ROLES, default="superuser")
        parser.add_argument("--if-no-users", action="store_true", help="do nothing when any user exists")

    def handle(self, *args, username, password, role, if_no_users, **options):
        if if_no_users and get_user_model().objects.exists():
            return
        ensure(self, username, password, role=role)
