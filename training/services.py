"""Model-request services: submission, validation, and the request's life cycle.

Nothing a provider sends is executed: the spec is validated against an allow-list
(``training.modelspec``) and the weights are parsed as safetensors, checked tensor by tensor.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import Application

from consent.rules import rules_apply_to_request
from consent.services import notice_publish
from dataspace.errors import Conflict, DomainError
from dataspace.models import DataCategory
from pods.agent.protocol import plan_hash

from .models import ModelRequest, ModelVersion, Provider, ProviderClient


def spec_limits() -> Any:
    from training.modelspec import SpecLimits

    return SpecLimits(
        max_parameters=settings.MODEL_MAX_PARAMETERS,
        max_layers=settings.MODEL_MAX_LAYERS,
        max_weights_bytes=settings.MODEL_MAX_WEIGHTS_BYTES,
        max_features=settings.MODEL_MAX_FEATURES,
    )


def _spec_error(exc: Any) -> DomainError:
    fields = {exc.field: [exc.message]} if getattr(exc, "field", None) else {}
    return DomainError(exc.message, code=exc.code, fields=fields)


def model_request_create(
    *, provider: Provider, spec: Any, weights: bytes, now: datetime | None = None
) -> ModelRequest:
    """Validate a spec and its weights, store them, render the notice and open recruiting.

    All or nothing: any invalid part raises :class:`DomainError` and nothing is stored. The
    weights file is written only after every check passed, and removed again if the database
    writes fail or do not commit, so a refused request never leaves an orphan file behind
    (Django has no rollback hook; an enclosing transaction that rolls back later is the
    caller's to clean up — the API calls this outside any transaction).
    """
    from training.modelspec import SpecError, count_parameters
    from training.modelspec.submission import check_submission

    now = now or timezone.now()

    def category_fields(slug: str) -> Any | None:
        found = DataCategory.objects.filter(slug=slug).first()
        return None if found is None else found.fields

    try:
        parsed = check_submission(
            spec, weights, category_fields=category_fields, limits=spec_limits()
        )
    except SpecError as exc:
        raise _spec_error(exc) from None
    category = DataCategory.objects.get(slug=parsed.data.category)
    training = spec["training"]
    privacy = spec["privacy"]
    digest = hashlib.sha256(weights).hexdigest()
    model_request = ModelRequest(
        provider=provider,
        title=parsed.title,
        purpose=parsed.purpose,
        data_category=category,
        features=list(parsed.data.features),
        label=parsed.data.label or "",
        spec=spec,
        weights_sha256=digest,
        weights_size=len(weights),
        parameter_count=count_parameters(parsed),
        rounds=training["rounds"],
        cohort_size=training["cohort_size"],
        min_participants=training["min_participants"],
        secagg_threshold=privacy["secagg_threshold"],
        dp=privacy.get("dp"),
    )
    model_request.weights.save("initial.safetensors", ContentFile(weights), save=False)
    try:
        with transaction.atomic():
            model_request.save()
            notice = notice_publish(model_request=model_request)
            model_request.plan_hash = plan_hash(spec, digest, notice.content_hash)
            model_request.move_to(ModelRequest.Status.RECRUITING, now=now)
            model_request.save()
            ModelVersion.objects.create(
                model_request=model_request,
                round_number=0,
                weights=model_request.weights.name,
                sha256=digest,
            )
    except BaseException:
        model_request.weights.storage.delete(model_request.weights.name)
        raise
    # People's standing rules decide now that it recruits (each decision is its own
    # transaction; the notification tick applies any a crash left out).
    rules_apply_to_request(model_request, now)
    return model_request


@transaction.atomic
def provider_create(
    *, name: str, contact_email: str, dpo_name: str = "", dpo_email: str = ""
) -> Provider:
    provider = Provider(
        name=name, contact_email=contact_email, dpo_name=dpo_name, dpo_email=dpo_email
    )
    try:
        provider.full_clean()
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise DomainError(f"{field}: {messages[0]}", code="invalid_provider") from None
    provider.save()
    return provider


@transaction.atomic
def provider_client_issue(*, provider: Provider) -> tuple[Application, str]:
    """Issue client credentials for a provider. The raw secret is returned once, stored hashed."""
    secret = generate_client_secret()
    application = Application(
        name=f"{provider.name} API client",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
        skip_authorization=True,
    )
    application.save()
    ProviderClient.objects.create(provider=provider, application=application)
    return application, secret


@transaction.atomic
def model_request_cancel(*, model_request: ModelRequest, reason: str = "") -> ModelRequest:
    locked = ModelRequest.objects.select_for_update().get(pk=model_request.pk)
    if locked.status in (
        ModelRequest.Status.COMPLETED,
        ModelRequest.Status.FAILED,
        ModelRequest.Status.CANCELLED,
    ):
        raise Conflict(f"The request is already {locked.status}.", code="request_finished")
    locked.move_to(
        ModelRequest.Status.CANCELLED,
        now=timezone.now(),
        reason=reason or "Cancelled by the provider.",
    )
    locked.save()
    from . import progress
    from .rounds.valuation import forget_candidates

    transaction.on_commit(lambda: forget_candidates(locked.pk))

    progress.publish(locked.pk, progress.request_event(locked))
    return locked
