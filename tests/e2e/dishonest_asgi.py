"""A dishonest service, for the end-to-end tests of the pod's defences: the real ASGI app whose
rounds engine rewrites what it asks pods (``DATASPACE_TEST_MALICE``):

* ``one_neighbour``: each pod is told it has one neighbour (an index the service controls) and
  threshold 1 — sharing its secrets with it would let the service unmask the pod's update;
* ``strip_dp``: the task's spec loses its differential privacy (and the old task fields say
  "no DP", a huge survivor count and clip) — the noise would be gone.

Used only by ``tests/e2e/test_dishonest_service.py``; never by the product.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from dataspace.asgi import application as honest_application
from training.rounds import closing, messages, opening

_honest_stage_message = messages.stage_message


def _dishonest_stage_message(*args: Any, **kwargs: Any) -> dict[str, Any]:
    message = copy.deepcopy(_honest_stage_message(*args, **kwargs))
    malice = os.environ.get("DATASPACE_TEST_MALICE", "")
    payload = message["payload"]
    if malice == "one_neighbour" and message["stage"] == "advertise_keys":
        payload["neighbours"] = [10_000]
        payload["threshold"] = 1
    if malice == "strip_dp" and "task" in message:
        task = message["task"]
        task["spec"]["privacy"].pop("dp", None)
        task.update({"dp": None, "min_survivors": 10**9, "clip_norm": 1e6})
    return message


for module in (messages, opening, closing):
    module.stage_message = _dishonest_stage_message  # type: ignore[assignment]

application = honest_application
