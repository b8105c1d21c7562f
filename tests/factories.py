"""factory_boy factories for the domain models."""

from __future__ import annotations

import os
from typing import Any

import factory
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from factory.django import DjangoModelFactory

from dataspace.catalog import BUNDLED, catalog_load
from dataspace.models import DataCategory
from pods.models import Pod, key_fingerprint
from training.models import ModelRequest, Provider

PASSWORD = "correct-horse-battery-staple"


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.org")
    password = factory.django.Password(PASSWORD)


class ProviderFactory(DjangoModelFactory[Provider]):
    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"Research Lab {n}")
    contact_email = factory.Sequence(lambda n: f"contact{n}@lab.example")
    dpo_name = "Dana Protector"
    dpo_email = factory.Sequence(lambda n: f"dpo{n}@lab.example")


def breast_category() -> DataCategory:
    if not DataCategory.objects.filter(slug="health.breast_screening").exists():
        catalog_load(text=BUNDLED.read_text())
    return DataCategory.objects.get(slug="health.breast_screening")


class PodFactory(DjangoModelFactory[Pod]):
    class Meta:
        model = Pod
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Phone {n}")
    public_key = factory.LazyFunction(lambda: os.urandom(32))
    fingerprint = factory.LazyAttribute(lambda o: key_fingerprint(o.public_key))
    categories_held = factory.LazyFunction(
        lambda: [{"slug": "health.breast_screening", "count": 1}]
    )

    @factory.post_generation
    def key_log(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        """Its identity key in the key log, as pairing leaves it."""
        if create:
            from pods.key_log import key_log_append

            key_log_append(pod=self)


def open_request(**overrides: Any) -> ModelRequest:
    """A recruiting model request built through the real service (spec, weights, notice)."""
    from dataspace.demo import demo_request_spec, demo_weights
    from training.services import model_request_create

    breast_category()
    provider = overrides.pop("provider", None) or ProviderFactory()
    spec = demo_request_spec(**overrides)
    return model_request_create(provider=provider, spec=spec, weights=demo_weights(spec))


__all__ = [
    "PASSWORD",
    "ContentFile",
    "PodFactory",
    "ProviderFactory",
    "UserFactory",
    "breast_category",
    "open_request",
]
