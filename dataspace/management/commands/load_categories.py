from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dataspace.catalog import BUNDLED, CatalogError, catalog_load


class Command(BaseCommand):
    help = (
        "Load data categories from a JSON file (a list of {slug, title, description, "
        "special_category, fields}). Idempotent; a malformed file writes nothing. "
        "Without FILE, loads the bundled catalog."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", type=Path, default=BUNDLED)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot read ({exc.__class__.__name__}).") from None
        try:
            created, updated = catalog_load(text=text)
        except CatalogError as exc:
            raise CommandError(f"{path}: {exc.message} Nothing was written.") from None
        self.stdout.write(f"{path.name}: {created} created, {updated} updated.")
