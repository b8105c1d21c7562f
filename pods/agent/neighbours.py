"""The ``share_keys`` stage's neighbour check: every advert's identity key is in the key log.

The service relays each neighbour's identity key with the key log's proofs for it
(:mod:`pods.agent.keylog`). :class:`pods.agent.rounds.RoundWorker` runs this check before it
encrypts any Shamir share to a neighbour: a key the service made up for the round, or one
claiming this pod's own person, gets no share; the pod declines the round instead.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from .keylog import (
    KEY_LOG_MALFORMED,
    KEY_NOT_IN_LOG,
    KeyLogError,
    KeyLogVerifier,
    LogEntry,
    verify_neighbour_key,
)


def verify_share_keys_adverts(
    verifier: KeyLogVerifier,
    message: Mapping[str, Any],
    *,
    owner_pseudonym: str | None = None,
) -> dict[str, LogEntry]:
    """Check every neighbour advert of a ``share_keys`` message against the key log.

    Expects, besides the adverts the SecAgg client already reads::

        "key_log": {"head": <tree head>, "consistency_path": [<b64>, ...]},
        "adverts": {"<v>": {..., "identity_key": <b64>, "pod_id": <uuid>,
                            "key_log": {"entry": <entry>, "inclusion_path": [<b64>, ...]}}}

    ``consistency_path`` runs from the head this pod reported holding to ``head``. Raises
    :class:`KeyLogError` on the first advert the log does not vouch for (the pod then declines
    the round); returns the verified entries by neighbour index.
    """
    try:
        log = message["key_log"]
        head = log["head"]
        consistency = log.get("consistency_path", [])
        adverts = dict(message["adverts"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise KeyLogError(KEY_LOG_MALFORMED) from None
    verified: dict[str, LogEntry] = {}
    for v, advert in adverts.items():
        try:
            proof = advert["key_log"]
            identity_key = base64.b64decode(advert["identity_key"], validate=True)
            pod_id = str(advert["pod_id"])
            entry, inclusion = proof["entry"], proof["inclusion_path"]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeyLogError(KEY_NOT_IN_LOG) from None
        verified[str(v)] = verify_neighbour_key(
            verifier,
            pod_id=pod_id,
            public_key=identity_key,
            entry=entry,
            inclusion_path=inclusion,
            head=head,
            consistency_path=consistency,
            owner_pseudonym=owner_pseudonym,
        )
    return verified
