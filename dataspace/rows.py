"""Writing many rows' fields at once: one prepared UPDATE run for each row (``executemany``).

Django's ``bulk_update`` sends one statement with a ``CASE WHEN pk = … THEN …`` per field over
every row: costly to build in the ORM, and on SQLite every updated row walks the whole CASE
(quadratic in the rows). A batch of stage answers or masked inputs writes a hundred rows or
more at a time; one short statement run once per row, in the caller's transaction, costs a
fraction of it on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, router
from django.db.models import Field, Model


def update_rows(rows: Sequence[Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of each of ``rows`` (instances of one model, saved before) by primary
    key. No signal is sent and no ``auto_now`` is applied, as with ``bulk_update``."""
    if not rows or not fields:
        return
    model = type(rows[0])
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    columns = [_concrete(meta.get_field(name)) for name in fields]
    quote = connection.ops.quote_name
    # Only the model's own table and column names, quoted, go into the text; values are bound.
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    table, key = quote(meta.db_table), quote(meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {key} = %s"  # noqa: S608
    params = [
        [column.get_db_prep_save(getattr(row, column.attname), connection) for column in columns]
        + [meta.pk.get_db_prep_save(row.pk, connection)]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)  # psycopg pipelines it: one round trip for the batch


def _concrete(field: object) -> Field:  # type: ignore[type-arg]
    """A column of the model's own table (not a reverse relation or a generic key)."""
    if not isinstance(field, Field) or not field.concrete or field.column is None:
        raise ValueError(f"{field} is not a column of the model's table")
    return field
