"""Settings of the pod channel, the rounds and their clock, Celery's delivery guarantees and the
notifications (imported by :mod:`dataspace.settings`)."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .environment import env_bool, env_int

# Without Redis, one process runs everything: the clocks tick in it (the embedded default).
_ONE_PROCESS = not os.environ.get("REDIS_URL", "")

# The pod control channel: seconds to authenticate, heartbeat interval, and silence allowed.
POD_AUTH_TIMEOUT = env_int("POD_AUTH_TIMEOUT", 10)
POD_HEARTBEAT_INTERVAL = env_int("POD_HEARTBEAT_INTERVAL", 20)
POD_HEARTBEAT_TIMEOUT = env_int("POD_HEARTBEAT_TIMEOUT", 60)
# The largest masked input a pod may send as one binary frame on its channel (0: none; pods
# then upload over HTTP). Keep it under the ASGI server's WebSocket limit (uvicorn: 16 MiB).
POD_MASKED_FRAME_BYTES = env_int("POD_MASKED_FRAME_BYTES", 8 * 1024 * 1024)
# Milliseconds a batch of pods' answers waits for more while a cohort's answers keep coming
# (pods.batching: fewer, larger transactions); an answer after a quiet moment goes at once.
POD_BATCH_GATHER_MS = env_int("POD_BATCH_GATHER_MS", 10)

# Rounds: seconds per secure-aggregation stage before silent pods are dropped, attempts per
# round before a request fails, the example count at which a pod's FedAvg weight saturates,
# and the L2 clip honest pods apply to updates when a request has no DP clip of its own.
ROUND_STAGE_SECONDS = env_int("ROUND_STAGE_SECONDS", 60)
ROUND_MAX_ATTEMPTS = env_int("ROUND_MAX_ATTEMPTS", 3)
# Seconds after which the clock sends the open stage again to pods that have not answered it
# (a stage message lost with the process that closed the stage costs this, not the deadline).
ROUND_RESEND_SECONDS = env_int("ROUND_RESEND_SECONDS", 5)
# Coordinate ranges summed in parallel by aggregation tasks (the leaves of the tree). Without
# Redis the tasks run one after the other in the process that closed the stage, so ranges buy
# no parallelism there and each would read every masked input and the round's state again.
ROUND_AGGREGATION_SHARDS = env_int("ROUND_AGGREGATION_SHARDS", 1 if _ONE_PROCESS else 4)
# Run the rounds clock (stage deadlines, resends) in the web process: the embedded default.
# Production runs it on exactly one Celery beat (training.tasks.rounds_tick) instead; /readyz
# says when no clock has ticked for ROUNDS_CLOCK_STALE_SECONDS.
ROUNDS_TICK_IN_PROCESS = env_bool("ROUNDS_TICK_IN_PROCESS", _ONE_PROCESS)
ROUNDS_TICK_SECONDS = float(os.environ.get("ROUNDS_TICK_SECONDS", "2.0"))
# /readyz reports the rounds clock "stale" when it has not ticked for this many seconds.
ROUNDS_CLOCK_STALE_SECONDS = env_int("ROUNDS_CLOCK_STALE_SECONDS", 30)
# Seconds between sweeps of files a killed process left behind (training.rounds.sweeping).
ROUND_SWEEP_SECONDS = env_int("ROUND_SWEEP_SECONDS", 60)
# At-least-once tasks: acks are late (a task is acknowledged when it has finished) and a task
# whose prefork child was killed is requeued at once (CELERY_TASK_REJECT_ON_WORKER_LOST). A
# whole worker killed leaves its reserved task unacknowledged in Redis; the broker hands it to
# another worker once the visibility timeout has passed (kombu's default is an hour). It must be
# shorter than a stage, so a killed worker's shard is redone before the deadline, and longer
# than the longest task (the root of a large model), or a running task is started twice —
# harmless, every task is idempotent, but wasted. Unacknowledged tasks are checked every 2 s.
CELERY_VISIBILITY_TIMEOUT = env_int(
    "CELERY_VISIBILITY_TIMEOUT", max(1, min(20, ROUND_STAGE_SECONDS // 3))
)
if not 0 < CELERY_VISIBILITY_TIMEOUT < ROUND_STAGE_SECONDS:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT must be positive and shorter than ROUND_STAGE_SECONDS."
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}
# Notifications (consent.scheduler): expire consents, apply standing rules, fill the portal
# inbox and send e-mails every NOTIFICATIONS_TICK_SECONDS — on Celery beat in production, in a
# thread of the web process in the embedded default (NOTIFICATIONS_IN_PROCESS).
NOTIFICATIONS_TICK_SECONDS = float(os.environ.get("NOTIFICATIONS_TICK_SECONDS", "60"))
NOTIFICATIONS_IN_PROCESS = env_bool("NOTIFICATIONS_IN_PROCESS", _ONE_PROCESS)
# Days before a consent expires when the person is told (with a one-click renewal link).
CONSENT_EXPIRY_NOTICE_DAYS = env_int("CONSENT_EXPIRY_NOTICE_DAYS", 14)
# Completed requests and withdrawals older than this many days are not notified any more.
NOTIFICATIONS_LOOKBACK_DAYS = env_int("NOTIFICATIONS_LOOKBACK_DAYS", 7)
NOTIFICATIONS_EMAIL_BATCH = env_int("NOTIFICATIONS_EMAIL_BATCH", 200)
NOTIFICATIONS_MAX_ATTEMPTS = env_int("NOTIFICATIONS_MAX_ATTEMPTS", 3)
CELERY_BEAT_SCHEDULE = {
    "rounds-tick": {"task": "training.tasks.rounds_tick", "schedule": ROUNDS_TICK_SECONDS},
    "notifications-tick": {
        "task": "consent.tasks.notifications_tick",
        "schedule": NOTIFICATIONS_TICK_SECONDS,
    },
}
# Seconds a provider has to send its token on the progress socket (/ws/requests/<id>/).
PROGRESS_AUTH_TIMEOUT = env_int("PROGRESS_AUTH_TIMEOUT", 5)
