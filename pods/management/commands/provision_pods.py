"""``manage.py provision_pods``: paired simulated pods for demos and load tests.

The pods are marked simulated: they never share a cohort with real pods, and outside the
embedded default or DEBUG the command runs only with ``--simulated``. Each pod gets an owner
account, an Ed25519 identity key made here, tokens issued by the
service's OAuth2 provider, and a pod home (key 0600, state with the tokens and the pinned
receipt key) that ``dataspace-pod simulate --homes DIR`` runs. Real people pair with
``dataspace-pod pair`` instead; this command needs database access, so only an operator can.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from consent.receipts import public_jwks
from pods.agent.home import PodHome, PodState, write_private
from pods.services import pod_provision


class Command(BaseCommand):
    help = "Create N paired simulated pods (owner, key, tokens) and write their homes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="how many pods")
        parser.add_argument("--homes", type=Path, required=True, help="directory for pod homes")
        parser.add_argument("--server", required=True, help="the URL pods will connect to")
        parser.add_argument("--prefix", default="sim", help="owner usernames: PREFIX-0001 …")
        parser.add_argument(
            "--owners",
            default="",
            help="comma-separated existing usernames that own the first pods (e.g. demo people)",
        )
        parser.add_argument(
            "--category", default="health.breast_screening", help="category the pods hold"
        )
        parser.add_argument(
            "--simulated",
            action="store_true",
            help=(
                "confirm these operator-made pods are simulated (required outside the embedded "
                "default and DEBUG; they never share a cohort with real pods)"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["count"]
        if not (settings.DEBUG or settings.EMBEDDED or options["simulated"]):
            raise CommandError(
                "provision_pods makes simulated pods with operator-made keys; outside the "
                "embedded default or DEBUG, pass --simulated to confirm"
            )
        if count < 1:
            raise CommandError("--count must be at least 1")
        homes: Path = options["homes"]
        if homes.exists() and any(homes.iterdir()):
            raise CommandError(f"{homes} is not empty; choose a new directory")
        owners = [u for u in options["owners"].split(",") if u]
        missing = set(owners) - set(
            User.objects.filter(username__in=owners).values_list("username", flat=True)
        )
        if missing:
            raise CommandError(f"unknown owners: {', '.join(sorted(missing))}")
        jwks = public_jwks()
        made = []
        for i in range(count):
            if i < len(owners):
                owner = User.objects.get(username=owners[i])
            else:
                owner, created = User.objects.get_or_create(
                    username=f"{options['prefix']}-{i + 1:04d}"
                )
                if created:
                    owner.set_unusable_password()
                    owner.save(update_fields=["password"])
            key = Ed25519PrivateKey.generate()
            name = f"{options['prefix']}-pod-{i + 1:04d}"
            pod, access, refresh = pod_provision(
                owner=owner,
                name=name,
                public_key=key.public_key().public_bytes_raw(),
                categories=[{"slug": options["category"], "count": 1}],
            )
            home = PodHome(homes / f"pod-{i + 1:04d}")
            write_private(home.path / "identity.key", key.private_bytes_raw())
            home.save_state(
                PodState(
                    server=options["server"].rstrip("/"),
                    pod_id=str(pod.pk),
                    name=name,
                    access_token=access,
                    refresh_token=refresh,
                    receipt_keys=jwks,
                )
            )
            made.append({"pod_id": str(pod.pk), "owner": owner.username, "home": str(home.path)})
        self.stdout.write(json.dumps({"pods": len(made), "homes": str(homes)}))
