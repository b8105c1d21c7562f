"""Path converters with bounds, so a path parameter can never overflow a database column.

Django's ``<int:...>`` takes any run of digits: ``/rounds/99999999999999999999/`` reaches the
ORM as an integer that no ``bigint`` holds (``OverflowError`` on SQLite, a 500). ``<id:...>``
matches 1 to 19 digits and refuses values over 2**63 - 1, so such a path is a plain 404.
"""

from __future__ import annotations

from django.urls import register_converter

BIGINT_MAX = 2**63 - 1


class BoundedIdConverter:
    """A positive database id (``BigAutoField``): 1 … 2**63 − 1."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 0 < number <= BIGINT_MAX:
            raise ValueError("id out of range")  # the resolver turns this into a 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(BoundedIdConverter, "id")
