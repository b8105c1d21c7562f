"""Compile the portal's translation catalogs (.po → .mo) in pure Python, or check them.

The .mo files are committed, so a fresh clone serves French and German without GNU gettext;
``make messages`` refreshes the .po files from the code (that step needs xgettext) and runs this
command. ``--check`` fails when a catalog has an untranslated or fuzzy entry, or when a .mo file
is not exactly what its .po compiles to (CI runs the same check as a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


def catalogs() -> list[Path]:
    return sorted(
        p for root in settings.LOCALE_PATHS for p in Path(root).glob("*/LC_MESSAGES/*.po")
    )


def catalog_problems(po_path: Path) -> list[str]:
    """What is wrong with one catalog: missing translations, fuzzy entries, a stale .mo."""
    import polib  # a dev dependency: only needed to refresh or check the catalogs

    po = polib.pofile(str(po_path))
    problems = [f"{po_path}: untranslated: {e.msgid[:60]!r}" for e in po.untranslated_entries()]
    problems += [f"{po_path}: fuzzy: {e.msgid[:60]!r}" for e in po.fuzzy_entries()]
    mo_path = po_path.with_suffix(".mo")
    if not mo_path.exists() or mo_path.read_bytes() != po.to_binary():
        problems.append(f"{mo_path}: not compiled from the current .po (run `make messages`)")
    return problems


class Command(BaseCommand):
    help = "Compile the translation catalogs (.po to .mo) in pure Python; --check verifies them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="change nothing; fail if a catalog is stale"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import polib

        found = catalogs()
        if not found:
            raise CommandError("No .po catalogs under LOCALE_PATHS.")
        if options["check"]:
            problems = [p for path in found for p in catalog_problems(path)]
            if problems:
                raise CommandError("\n".join(problems))
            self.stdout.write(f"{len(found)} catalogs complete and compiled.")
            return
        for path in found:
            polib.pofile(str(path)).save_as_mofile(str(path.with_suffix(".mo")))
            self.stdout.write(f"compiled {path.with_suffix('.mo')}")
