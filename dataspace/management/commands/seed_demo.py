from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from consent.services import data_subject_for
from dataspace.catalog import BUNDLED, catalog_load
from dataspace.demo import demo_request_spec, demo_weights
from training.models import ModelRequest, Provider
from training.services import model_request_create

DEMO_PASSWORD = "dataspace-demo"  # noqa: S105  (printed demo credentials, embedded default only)
DEMO_PEOPLE = ("alice", "bob", "carol")
DEMO_PROVIDER = "Northbridge Health Research"
DEMO_TITLE_FR = "Dépistage du cancer du sein : un modèle de risque partagé"
DEMO_TITLE_DE = "Brustkrebs-Früherkennung: ein gemeinsames Risikomodell"
DEMO_PURPOSE_FR = (
    "Entraîner un modèle qui aide les radiologues à distinguer les masses mammaires bénignes des "
    "masses malignes à partir des mesures d’une cytoponction, afin que moins de personnes aient "
    "besoin d’une seconde biopsie."
)


class Command(BaseCommand):
    help = (
        "Seed the embedded default for a demo: the bundled catalog, demo accounts "
        f"({', '.join(DEMO_PEOPLE)} and the operator 'admin', password '{DEMO_PASSWORD}'), "
        "a demo provider and one recruiting model request. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="print nothing on success")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        created, updated = catalog_load(text=BUNDLED.read_text(encoding="utf-8"))
        for name in DEMO_PEOPLE:
            user, made = User.objects.get_or_create(
                username=name, defaults={"email": f"{name}@example.org"}
            )
            if made:
                user.set_password(DEMO_PASSWORD)
                user.save()
            data_subject_for(user)
        admin, made = User.objects.get_or_create(
            username="admin",
            defaults={"email": "admin@example.org", "is_staff": True, "is_superuser": True},
        )
        if made:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        provider, _ = Provider.objects.get_or_create(
            name=DEMO_PROVIDER,
            defaults={
                "contact_email": "research@northbridge.example",
                "dpo_name": "Dr. Ines Okafor",
                "dpo_email": "dpo@northbridge.example",
            },
        )
        spec = demo_request_spec()
        title = spec["title"]
        # The provider gives its title in three languages and its purpose in two: a German
        # reader sees the English purpose, and the notice says it is in English.
        spec["title"] = {"en": title, "fr": DEMO_TITLE_FR, "de": DEMO_TITLE_DE}
        spec["purpose"] = {"en": spec["purpose"], "fr": DEMO_PURPOSE_FR}
        if not ModelRequest.objects.filter(provider=provider, title=title).exists():
            model_request_create(provider=provider, spec=spec, weights=demo_weights(spec))
        if not options["quiet"]:
            self.stdout.write(
                f"Catalog: {created} created, {updated} updated. Demo accounts: "
                f"{', '.join(DEMO_PEOPLE)} (people) and admin (operator), password "
                f"'{DEMO_PASSWORD}'. Provider: {DEMO_PROVIDER}, with one recruiting request."
            )
