"""The pod's own consent check, against receipts the service really signs."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from consent import receipts, services
from pods.agent.consent import ConsentRefused, check_task, verify_receipt
from pods.agent.protocol import plan_hash
from tests.factories import UserFactory, open_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def task() -> dict:  # type: ignore[type-arg]
    model_request = open_request()
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=model_request)
    return {
        "signed": receipts.receipt_signed(consent),
        "jwks": receipts.public_jwks(),
        "request_id": str(model_request.pk),
        "spec": model_request.spec,
        "weights": model_request.weights.open("rb").read(),
        "consent": consent,
        "user": user,
    }


def check(task: dict, **changes: object) -> None:  # type: ignore[type-arg]
    args = {
        "request_id": task["request_id"],
        "spec": task["spec"],
        "weights_sha256": hashlib.sha256(task["weights"]).hexdigest(),
        "now": timezone.now(),
    }
    args.update(changes)
    receipt = verify_receipt(task["signed"], task["jwks"])
    check_task(receipt=receipt, **args)  # type: ignore[arg-type]


def test_consented_plan_is_accepted(task: dict) -> None:  # type: ignore[type-arg]
    check(task)


def refused(task: dict, **changes: object) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConsentRefused) as excinfo:
        check(task, **changes)
    return excinfo.value.code


def test_changed_weights_or_spec_is_a_different_plan(task: dict) -> None:  # type: ignore[type-arg]
    other_weights = bytearray(task["weights"])
    other_weights[-1] ^= 1
    spec = copy.deepcopy(task["spec"])
    spec["training"]["rounds"] = 99
    assert (
        refused(task, weights_sha256=hashlib.sha256(bytes(other_weights)).hexdigest())
        == "plan_mismatch"
    )
    assert refused(task, spec=spec) == "plan_mismatch"


def test_fields_outside_the_consent_are_refused(task: dict) -> None:  # type: ignore[type-arg]
    # Even a plan hash the service could make match cannot widen the consented fields.
    receipt = verify_receipt(task["signed"], task["jwks"])
    spec = copy.deepcopy(task["spec"])
    spec["data"]["features"].append("home address")
    receipt["purpose"]["model_request"]["plan_hash"] = plan_hash(
        spec, hashlib.sha256(task["weights"]).hexdigest(), receipt["notice"]["hash"]
    )
    with pytest.raises(ConsentRefused) as excinfo:
        check_task(
            receipt=receipt,
            request_id=task["request_id"],
            spec=spec,
            weights_sha256=hashlib.sha256(task["weights"]).hexdigest(),
            now=timezone.now(),
        )
    assert excinfo.value.code == "fields_not_consented"


def test_withdrawn_expired_wrong_request_and_forged_receipts_are_refused(task: dict) -> None:  # type: ignore[type-arg]
    assert refused(task, now=timezone.now() + timedelta(days=400)) == "consent_expired"
    assert refused(task, request_id="00000000-0000-0000-0000-000000000000") == "wrong_request"
    forged = copy.deepcopy(task["signed"])
    forged["receipt"]["data"]["fields"].append("home address")
    with pytest.raises(ConsentRefused, match="bad_receipt"):
        verify_receipt(forged, task["jwks"])
    other_key = {"keys": [{**task["jwks"]["keys"][0], "x": "A" * 43}]}
    with pytest.raises(ConsentRefused, match="bad_receipt"):
        verify_receipt(task["signed"], other_key)
    withdrawn = services.consent_withdraw(user=task["user"], consent=task["consent"])
    task["signed"] = receipts.receipt_signed(withdrawn)
    assert refused(task) == "no_consent"


def test_the_first_receipt_that_fits_is_taken_and_later_sources_are_not_asked() -> None:
    from pods.agent.consent import first_fitting

    asked: list[str] = []

    def source(name: str, *, refuses: bool = False) -> Callable[[], dict[str, Any]]:
        def give() -> dict[str, Any]:
            asked.append(name)
            if refuses:
                raise ConsentRefused("bad_receipt", "does not verify")
            return {"name": name}

        return give

    def fits(receipt: dict[str, Any]) -> None:
        if receipt["name"] == "stale":
            raise ConsentRefused("consent_expired", "expired")

    sources = [source("stale"), source("forged", refuses=True), source("good"), source("fetched")]
    assert first_fitting(sources, fits) == {"name": "good"}
    assert asked == ["stale", "forged", "good"]

    # The last source's refusal is the task's.
    asked.clear()
    with pytest.raises(ConsentRefused) as refused:
        first_fitting([source("forged", refuses=True), source("stale")], fits)
    assert refused.value.code == "consent_expired" and asked == ["forged", "stale"]
    with pytest.raises(ValueError, match="no source"):
        first_fitting([], fits)
