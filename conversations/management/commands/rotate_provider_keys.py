"""Re-encrypt every provider's API key under the first of PROVIDER_KEY_SECRETS (docs/operations.md)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from conversations.models import Provider, secrets


class Command(BaseCommand):
    help = "Re-encrypt providers' API keys with the first key of PROVIDER_KEY_SECRETS (after adding a new one)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--from-secret-key", metavar="OLD_SECRET_KEY",
            help="the SECRET_KEY the keys were stored under, when PROVIDER_KEY_SECRETS was unset then",
        )

    def handle(self, *args, from_secret_key=None, **options):
        old = secrets.derived_from_secret_key(from_secret_key) if from_secret_key else None
        rotated = 0
        with transaction.atomic():
            for provider in Provider.objects.select_for_update().exclude(api_key_encrypted=""):
                try:
                    if old is not None:
                        plain = old.decrypt(provider.api_key_encrypted.encode()).decode()
                        provider.api_key_encrypted = secrets.encrypt(plain)
                    else:
                        provider.api_key_encrypted = secrets.rotate(provider.api_key_encrypted)
                except Exception as error:
                    raise CommandError(f"the key of provider {provider.name!r} cannot be decrypted "
                                       f"({type(error).__name__}): nothing was changed") from None
                provider.save(update_fields=["api_key_encrypted"])
                rotated += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the keys of {rotated} providers."))
