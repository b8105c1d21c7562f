import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dataspace.errors import DomainError
from training.models import Provider
from training.services import provider_client_issue, provider_create


class Command(BaseCommand):
    help = (
        "Create an AI provider and a confidential OAuth2 client (client-credentials grant) and "
        'print one JSON line {"provider", "provider_id", "client_id", "client_secret"}. The secret '
        "is shown only here. For an existing provider, issues another client."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the organisation's name")
        parser.add_argument("--contact", default="", help="contact e-mail (required when creating)")
        parser.add_argument("--dpo-name", default="", help="data protection officer's name")
        parser.add_argument("--dpo-email", default="", help="data protection officer's e-mail")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = Provider.objects.filter(name=options["name"]).first()
        try:
            if provider is None:
                if not options["contact"]:
                    raise CommandError("--contact E-MAIL is required to create a provider.")
                provider = provider_create(
                    name=options["name"],
                    contact_email=options["contact"],
                    dpo_name=options["dpo_name"],
                    dpo_email=options["dpo_email"],
                )
            else:
                self.stderr.write(f"Provider {provider.name!r} exists; issuing another client.")
            application, secret = provider_client_issue(provider=provider)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            json.dumps(
                {
                    "provider": provider.name,
                    "provider_id": provider.pk,
                    "client_id": application.client_id,
                    "client_secret": secret,
                }
            )
        )
