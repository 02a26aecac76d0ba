"""parse_json, the one reader of every JSON body and of the JSON text the importers read."""

import pytest

from telemetry.http import parse_json


@pytest.mark.parametrize(
    "body",
    [b"1e400", b'{"x": [-1.5e999]}', b'{"x": NaN}', b"Infinity", b"[-Infinity]", "1E+400"],
)
def test_it_refuses_numbers_no_json_column_holds(body):
    with pytest.raises(ValueError):
        parse_json(body)


@pytest.mark.parametrize(
    "body, value",
    [
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b"1e-400", 0.0),
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b'{"a": 1, "a": 2.5}', {"a": 2.5}),
        ('{"é": "\\ud83d\\ude00"}', {"é": "\U0001f600"}),
    ],
)
def test_it_reads_numbers_and_text_as_json_loads(body, value):
    assert parse_json(body) == value
    assert type(parse_json(body)) is type(value)


@pytest.mark.parametrize("body", [b"\xff{}", b"[" * 100_000 + b"]" * 100_000, b"{", b""])
def test_it_refuses_bad_utf8_absurd_nesting_and_broken_text_with_valueerror(body):
    with pytest.raises(ValueError):
        parse_json(body)
