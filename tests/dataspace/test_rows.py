"""dataspace.rows.update_rows: many rows' fields in one prepared statement."""

from __future__ import annotations

import pytest

from dataspace.rows import update_rows
from tests.training.rounds.test_engine import _tasks_in_process, open_round  # noqa: F401
from training.models import RoundParticipant

pytestmark = pytest.mark.django_db(transaction=True)


def test_rows_get_their_own_values_and_no_other_row_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = open_round(monkeypatch, 4, min_participants=3)
    rows = list(opened.round.participants.order_by("index"))
    untouched = rows[3]
    for i, row in enumerate(rows[:3]):
        row.reply = {"n": i, "text": "é" if i == 0 else None, "list": [i, {"k": "v"}]}
        row.stage_reached = RoundParticipant.Stage.ADVERTISED
        row.key_log_size = 10 + i
    rows[2].reply = None  # SQL NULL, as a dropped pod's
    update_rows(rows[:3], ["reply", "stage_reached", "key_log_size"])
    fresh = {p.pk: p for p in opened.round.participants.all()}
    for i, row in enumerate(rows[:3]):
        assert fresh[row.pk].reply == row.reply
        assert fresh[row.pk].stage_reached == RoundParticipant.Stage.ADVERTISED
        assert fresh[row.pk].key_log_size == 10 + i
    assert RoundParticipant.objects.filter(pk=rows[2].pk, reply__isnull=True).exists()
    assert fresh[untouched.pk].stage_reached == RoundParticipant.Stage.SELECTED
    assert fresh[untouched.pk].reply is None and fresh[untouched.pk].key_log_size == 0
    update_rows([], ["reply"])  # nothing to write: no statement
