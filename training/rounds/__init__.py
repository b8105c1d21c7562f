"""The rounds engine: a model request's rounds as a state machine persisted in the database.

recruiting → training when enough pods with a usable consent are online; each round runs the
four SecAgg+ stages (:mod:`training.secagg`) with a deadline per stage — a silent pod is
dropped, never waited for — and a round whose survivors fall below the threshold aborts
(revealing nothing) and is retried with a fresh cohort, a bounded number of times. Consent is
re-checked at every stage's close and on every upload; a withdrawal or "pause all training"
drops the pod at once.

One module per concern (docs/architecture.md has the map and the state machine):
``transitions`` (the stage table), ``locking`` (lock order), ``cohort`` (who may take part),
``messages`` (what a pod is asked), ``opening``, ``answers`` (replies, uploads, declines,
leaving), ``closing`` (stage closes), ``ending`` (drop, abort, retry), ``aggregation`` (the
tree), ``model_update``, ``clock``, ``resending`` (asking again),
``files`` (a round's files), ``sweeping`` (files left behind), ``progress`` (events for watchers).
Live messages leave only through :mod:`dataspace.delivery`, after commit.
"""
