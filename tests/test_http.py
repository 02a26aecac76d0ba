"""parse_json, the one reader of every JSON body and of the JSON text the importers read."""

from concurrent.futures import ThreadPoolExecutor

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


@pytest.mark.parametrize("body", [b"\xef\xbb\xbf{}", "\ufeff[1]"])
def test_it_refuses_a_byte_order_mark_as_json_loads_does(body):
    with pytest.raises(ValueError, match="BOM"):
        parse_json(body)


def test_threads_sharing_the_one_decoder_each_read_their_own_body():
    # One decoder serves every thread (granian and gthread workers); floats call back into
    # Python mid-parse, where another thread can take over the same scanner.
    bodies = [
        f'{{"t": {t}, "xs": [{", ".join(f"{t}.{i}5" for i in range(200))}]}}' for t in range(8)
    ]
    wanted = [{"t": t, "xs": [float(f"{t}.{i}5") for i in range(200)]} for t in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            assert list(pool.map(parse_json, bodies)) == wanted
