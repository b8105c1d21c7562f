"""A request's title in the reader's language, where its provider gave one (else as written)."""

from __future__ import annotations

from django import template

from consent.languages import current_language
from training.models import ModelRequest

register = template.Library()


@register.filter
def localized_title(model_request: ModelRequest) -> str:
    return model_request.texts.title_in(current_language())[0]


@register.filter
def title_language(model_request: ModelRequest) -> str:
    """The language of :func:`localized_title`'s text (for the element's ``lang``)."""
    return model_request.texts.title_in(current_language())[1]
