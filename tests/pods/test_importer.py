"""Importing records on the pod: validated whole against the catalog schema, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pods.agent.home import PodHome
from pods.agent.importer import ImportFailed, parse_records
from pods.agent.store import LocalStore

FIELDS = [
    {"name": "age", "type": "int", "unit": "years", "description": ""},
    {"name": "weight", "type": "float", "unit": "kg", "description": ""},
    {"name": "smoker", "type": "bool", "unit": "", "description": ""},
    {"name": "note", "type": "string", "unit": "", "description": ""},
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_and_json_lines_are_parsed_and_typed(tmp_path: Path) -> None:
    csv_rows = parse_records(
        write(tmp_path, "a.csv", 'age,weight,smoker,note\n41,72.5,no,ok\n35, 60 ,TRUE,"a, b"\n'),
        FIELDS,
    )
    json_rows = parse_records(
        write(
            tmp_path, "a.jsonl", '{"age": 41, "weight": 72.5, "smoker": false, "note": "ok"}\n\n'
        ),
        FIELDS,
    )
    assert csv_rows == [
        {"age": 41, "weight": 72.5, "smoker": False, "note": "ok"},
        {"age": 35, "weight": 60.0, "smoker": True, "note": "a, b"},
    ]
    assert json_rows == [csv_rows[0]]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "empty.csv is empty"),
        ("header-only.csv", "age,weight,smoker,note\n", "has no records"),
        (
            "unknown.csv",
            "age,weight,smoker,note,ssn\n1,2,no,x,123\n",
            "line 1: unknown column 'ssn'",
        ),
        (
            "type.csv",
            "age,weight,smoker,note\n41,72.5,no,ok\n4x,1,no,x\n",
            "line 3, field 'age': expected int, got '4x'",
        ),
        (
            "nan.csv",
            "age,weight,smoker,note\n41,nan,no,ok\n",
            "line 2, field 'weight': expected float",
        ),
        ("bool.csv", "age,weight,smoker,note\n41,1,maybe,ok\n", "field 'smoker': expected bool"),
        (
            "missing.csv",
            "age,weight,smoker,note\n41,,no,ok\n",
            "line 2: missing value for 'weight'",
        ),
        (
            "extra.csv",
            "age,weight,smoker,note\n41,1,no,ok,surplus\n",
            "line 2: more values than columns",
        ),
        (
            "bad.jsonl",
            '{"age": 1, "weight": 2, "smoker": true, "note": "x"}\n{oops\n',
            "line 2: not valid JSON",
        ),
        ("list.jsonl", "[1, 2]\n", "line 1: expected a JSON object"),
        (
            "str.jsonl",
            '{"age": "4x", "weight": 1, "smoker": true, "note": 5}\n',
            "field 'age': expected int",
        ),
    ],
)
def test_bad_files_are_refused_with_the_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(ImportFailed) as excinfo:
        parse_records(write(tmp_path, name, text), FIELDS)
    assert message in str(excinfo.value)


def test_store_is_all_or_nothing_and_private(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store.sqlite3")
    rows = [{"age": 1, "weight": 2.0, "smoker": False, "note": ""}]
    store.add_records("health.x", FIELDS, rows)
    with pytest.raises(TypeError):
        store.add_records("health.x", FIELDS, [rows[0], {"age": object()}])  # not serialisable
    assert store.counts() == {"health.x": 1}
    assert (tmp_path / "store.sqlite3").stat().st_mode & 0o777 == 0o600
    store.close()


def test_identity_key_is_0600_and_a_readable_key_is_refused(tmp_path: Path) -> None:
    home = PodHome(tmp_path / "pod")
    fingerprint = home.fingerprint()
    key_file = tmp_path / "pod" / "identity.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert PodHome(tmp_path / "pod").fingerprint() == fingerprint  # stable
    key_file.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        home.identity()


HEADER = "age,weight,smoker,note\n"
ROW = '{"age": 1, "weight": 2, "smoker": true, "note": "x"}\n'


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("dup.csv", "age,weight,smoker,note,age\n1,2,no,x,3\n", "line 1: duplicate column 'age'"),
        ("under.csv", HEADER + "1_000,2,no,x\n", "line 2, field 'age': expected int"),
        ("funder.csv", HEADER + "1,1_000.5,no,x\n", "line 2, field 'weight': expected float"),
        ("hex.csv", HEADER + "0x1f,2,no,x\n", "line 2, field 'age': expected int"),
        ("arabic.csv", HEADER + "١٢,2,no,x\n", "line 2, field 'age': expected int"),
        ("inf.csv", HEADER + "1,infinity,no,x\n", "line 2, field 'weight': expected float"),
        ("long.csv", HEADER + "1" * 5000 + ",2,no,x\n", "integer longer than 4300 digits"),
        ("longf.csv", HEADER + "1,1" + "0" * 5000 + ",no,x\n", "field 'weight': expected float"),
        ("big.csv", HEADER + "1,2,no," + "x" * 140_000 + "\n", "line 2: not valid CSV"),
        ("quote.csv", HEADER + '1,2,no,"x"y\n', "line 2: not valid CSV"),
        ("nul.csv", HEADER + "1,2,no,x\n1,2,no,a\x00b\n", "line 3: a NUL character"),
        ("deep.jsonl", ROW + "[" * 100_000 + "]" * 100_000 + "\n", "line 2: JSON nested deeper"),
        ("deepobj.jsonl", '{"age": ' + "[" * 5000 + "]" * 5000 + "}\n", "line 1: JSON nested"),
        ("bigint.jsonl", '{"age": ' + "1" * 5000 + "}\n", "line 1: not valid JSON"),
        ("dupkey.jsonl", '{"age": 1, "age": 2}\n', "line 1: duplicate key 'age'"),
        ("nul.jsonl", ROW + '{"note": "a\\u0000"}\n', "line 2: a NUL character"),
        ("nan.jsonl", '{"age": 1, "weight": NaN, "smoker": true, "note": "x"}\n', "line 1: not"),
        (
            "strnum.jsonl",
            '{"age": "1_000", "weight": 2, "smoker": true, "note": "x"}\n',
            "line 1, field 'age': expected int",
        ),
    ],
)
def test_malformed_files_are_one_line_errors_never_tracebacks(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(ImportFailed) as excinfo:
        parse_records(write(tmp_path, name, text), FIELDS)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    assert len(str(excinfo.value)) < 200


def test_large_but_valid_integers_and_decimals_still_import(tmp_path: Path) -> None:
    rows = parse_records(
        write(tmp_path, "ok.csv", HEADER + "+42,-1.5e3,yes,x\n" + "7,.5,no,y\n"), FIELDS
    )
    assert rows == [
        {"age": 42, "weight": -1500.0, "smoker": True, "note": "x"},
        {"age": 7, "weight": 0.5, "smoker": False, "note": "y"},
    ]
