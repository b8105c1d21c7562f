"""A provider's texts (title, purpose) in one or more languages.

A spec may give ``title`` and ``purpose`` as plain strings, in the language named by the spec's
``language`` (default ``en``), or as objects with one text per language:
``{"en": "...", "fr": "..."}``, which must include the spec's own language — the text the
provider is answerable for. The notice shows a person the text in their language where the
provider gave one, and otherwise the provider's text with a sentence saying which language it is
in; the plan hash covers the spec, so every language version is part of the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SpecError

# The languages the portal speaks (dataspace.settings.LANGUAGES lists the same codes).
LANGUAGES = ("en", "fr", "de")
DEFAULT_LANGUAGE = "en"
TITLE_MAX = 200
PURPOSE_MAX = 5000


@dataclass(frozen=True)
class ProviderTexts:
    """The provider's title and purpose, per language, and the language it wrote them in."""

    language: str
    titles: Mapping[str, str]
    purposes: Mapping[str, str]

    @property
    def title(self) -> str:
        return self.titles[self.language]

    @property
    def purpose(self) -> str:
        return self.purposes[self.language]

    def title_in(self, language: str) -> tuple[str, str]:
        """The title to show a person reading ``language``, and the language it is in."""
        return _pick(self.titles, language, self.language)

    def purpose_in(self, language: str) -> tuple[str, str]:
        """The purpose to show a person reading ``language``, and the language it is in."""
        return _pick(self.purposes, language, self.language)


def _pick(texts: Mapping[str, str], language: str, source: str) -> tuple[str, str]:
    if language in texts:
        return texts[language], language
    return texts[source], source


def _text(value: Any, path: str, max_len: int, language: str) -> dict[str, str]:
    def one(text: Any, where: str) -> str:
        if not isinstance(text, str) or not text.strip() or len(text) > max_len:
            raise SpecError("invalid_value", f"Must be a text of 1 to {max_len} characters.", where)
        return text

    if isinstance(value, str):
        return {language: one(value, path)}
    if not isinstance(value, dict) or not value:
        raise SpecError(
            "invalid_value",
            "Must be a text, or an object with one text per language code "
            f"({', '.join(LANGUAGES)}).",
            path,
        )
    for code in value:
        if code not in LANGUAGES:
            raise SpecError(
                "unknown_language",
                f"Unknown language {code!r}; use one of {', '.join(LANGUAGES)}.",
                f"{path}.{code}",
            )
    if language not in value:
        raise SpecError(
            "invalid_value",
            f"Must include the spec's own language {language!r}.",
            f"{path}.{language}",
        )
    return {code: one(text, f"{path}.{code}") for code, text in value.items()}


def validate_texts(raw: Mapping[str, Any]) -> ProviderTexts:
    """Check a spec's ``language``, ``title`` and ``purpose`` (raises :class:`SpecError`)."""
    language = raw.get("language", DEFAULT_LANGUAGE)
    if language not in LANGUAGES:
        raise SpecError(
            "unknown_language",
            f"Unknown language {language!r}; use one of {', '.join(LANGUAGES)}.",
            "language",
        )
    return ProviderTexts(
        language=language,
        titles=_text(raw["title"], "title", TITLE_MAX, language),
        purposes=_text(raw["purpose"], "purpose", PURPOSE_MAX, language),
    )


def provider_texts(spec: Mapping[str, Any]) -> ProviderTexts:
    """The texts of a spec that was validated when it was stored (never raises on those)."""
    return validate_texts(spec)
