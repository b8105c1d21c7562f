"""The translation catalogs: complete, compiled, and for the languages the portal offers."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.utils import translation

from dataspace.management.commands.compile_catalogs import catalog_problems, catalogs
from training.modelspec import LANGUAGES


def test_catalogs_are_complete_and_their_mo_files_current() -> None:
    found = catalogs()
    assert {p.parent.parent.name for p in found} == {"fr", "de"}
    assert [problem for path in found for problem in catalog_problems(path)] == []
    call_command("compile_catalogs", "--check")


def test_portal_and_spec_offer_the_same_languages() -> None:
    assert tuple(code for code, _name in settings.LANGUAGES) == LANGUAGES


def test_compiled_catalogs_translate() -> None:
    with translation.override("fr"):
        assert translation.gettext("My consents") == "Mes consentements"
    with translation.override("de"):
        assert translation.gettext("My consents") == "Meine Einwilligungen"
        assert translation.ngettext(
            "History (%(counter)s event)", "History (%(counter)s events)", 2
        ) == ("Verlauf (%(counter)s Ereignisse)")
