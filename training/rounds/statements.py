"""The answer paths' hot statements, as plain SQL: the round's row locked, who answers, who waits.

Each answer batch (``training.rounds.answers``, ``training.rounds.uploads``) ran the same three
reads through the ORM — building, compiling and resolving a query each time cost more than the
database's work on it, and a stage's batches are as many as its pods when answers trickle in.
Here the SQL text is made once per database (from the models' own table and column names,
quoted by the backend) and each call only binds its values. Same locks as before: the round's
row ``FOR UPDATE`` where the database has it (PostgreSQL; SQLite's transactions take the write
lock when they begin).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field

from pods.models import Pod
from training.models import RoundParticipant, TrainingRound

# What an answer batch reads of each participant answering, in the model's column order (the
# rest is deferred: read from the database if ever touched, as with ``.only()``).
ANSWERING = tuple(
    f.attname
    for f in RoundParticipant._meta.concrete_fields
    if f.name in {"id", "round", "pod", "user", "index", "stage_reached", "dropped_at_stage"}
)
# Pods per statement (SQLite binds at most 999 values in older builds).
CHUNK = 500


def _connection() -> BaseDatabaseWrapper:
    return connections[router.db_for_write(RoundParticipant)]


def _column(model: Any, name: str) -> str:
    """A field's column in its model's own table."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or not field.column:
        raise ValueError(f"{name} is not a column of {model.__name__}")
    return field.column


def _columns(model: Any, fields: Iterable[str], connection: BaseDatabaseWrapper) -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(_column(model, name)) for name in fields)


@cache
def _round_sql(alias: str, fields: tuple[str, ...]) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = TrainingRound._meta
    sql = (
        f"SELECT {_columns(TrainingRound, fields, connection)} FROM {quote(meta.db_table)} "  # noqa: S608
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    return sql + (" FOR UPDATE" if connection.features.has_select_for_update else "")


def lock_round_values(round_id: int, *fields: str) -> tuple[Any, ...] | None:
    """The round's ``fields`` (column values as stored: a foreign key's id), its row locked
    (call inside ``transaction.atomic``); None when there is no such round."""
    connection = _connection()
    with connection.cursor() as cursor:
        cursor.execute(_round_sql(connection.alias, fields), [round_id])
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


# What storing a masked input reads of a participant besides (its input; its pod's status).
STORING = tuple(
    f.attname
    for f in RoundParticipant._meta.concrete_fields
    if f.attname in {*ANSWERING, "masked_input", "masked_sha256"}
)


@cache
def _answering_sql(alias: str, count: int, fields: tuple[str, ...], pod_status: bool) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta, pods = RoundParticipant._meta, Pod._meta
    table = quote(meta.db_table)
    pod_column = f"{table}.{quote(_column(RoundParticipant, 'pod'))}"
    columns = [f"{table}.{quote(_column(RoundParticipant, name))}" for name in fields]
    joined = ""
    if pod_status:
        columns.append(f"{quote(pods.db_table)}.{quote(_column(Pod, 'status'))}")
        joined = (
            f" INNER JOIN {quote(pods.db_table)} "
            f"ON {quote(pods.db_table)}.{quote(pods.pk.column)} = {pod_column}"
        )
    marks = ", ".join(["%s"] * count)
    return (
        f"SELECT {', '.join(columns)} FROM {table}{joined} "  # noqa: S608
        f"WHERE {table}.{quote(_column(RoundParticipant, 'round'))} = %s "
        f"AND {pod_column} IN ({marks})"
    )


def pod_key(pod_id: uuid.UUID | str) -> str:
    """A pod's id as one text whichever way it came (a UUID, its text, its hex); the text
    itself when it is no UUID (it then matches no row)."""
    try:
        return str(pod_id if isinstance(pod_id, uuid.UUID) else uuid.UUID(str(pod_id)))
    except ValueError:
        return str(pod_id)


def answering(
    round_id: int,
    pod_ids: Sequence[uuid.UUID | str],
    fields: tuple[str, ...] = ANSWERING,
    *,
    pod_status: bool = False,
) -> dict[str, RoundParticipant]:
    """The round's participants among ``pod_ids``, by :func:`pod_key`, with ``fields`` only
    (attribute names in the model's column order: :data:`ANSWERING`, :data:`STORING`) — their
    replies and the rest are read only if touched; with ``pod_status``, each one's pod too
    (its id and status: ``participant.pod.is_active`` costs no query)."""
    keys = sorted({key for key in map(pod_key, pod_ids) if _is_uuid(key)})
    connection = _connection()
    prepare = RoundParticipant._meta.get_field("pod").target_field.get_db_prep_value
    pod_at = fields.index("pod_id")
    found = {}
    with connection.cursor() as cursor:
        for start in range(0, len(keys), CHUNK):
            chunk = [prepare(key, connection) for key in keys[start : start + CHUNK]]
            sql = _answering_sql(connection.alias, len(chunk), fields, pod_status)
            cursor.execute(sql, [round_id, *chunk])
            for row in cursor.fetchall():
                values = list(row[: len(fields)])
                values[pod_at] = uuid.UUID(str(values[pod_at]))  # SQLite keeps it as hex
                participant = RoundParticipant.from_db(connection.alias, fields, values)
                if pod_status:
                    pod = Pod.from_db(connection.alias, ["id", "status"], [values[pod_at], row[-1]])
                    RoundParticipant.pod.field.set_cached_value(participant, pod)
                found[str(participant.pod_id)] = participant
    return found


def _is_uuid(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


@cache
def _waiting_sql(alias: str) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    round_, dropped, stage = (
        _columns(RoundParticipant, [name], connection)
        for name in ("round", "dropped_at_stage", "stage_reached")
    )
    return (
        f"SELECT 1 FROM {quote(RoundParticipant._meta.db_table)} "  # noqa: S608
        f"WHERE {round_} = %s AND {dropped} = '' AND {stage} = %s LIMIT 1"
    )


def anyone_waiting(round_id: int, waiting: str) -> bool:
    """Whether a live participant of the round is still at stage ``waiting``."""
    connection = _connection()
    with connection.cursor() as cursor:
        cursor.execute(_waiting_sql(connection.alias), [round_id, waiting])
        return cursor.fetchone() is not None
