"""The pipeline's JSON writer: json.dumps' exact text, from an encoder built once."""

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.ingest.pipeline import _dumps, _iso

# What front doors and imports hand the writer: parsed JSON, and rows with times in them.
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars | st.datetimes(timezones=st.just(dt.UTC)) | st.dates(),
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_it_writes_what_json_dumps_writes(value):
    assert _dumps(value) == json.dumps(value, separators=(",", ":"), default=_iso)


@pytest.mark.parametrize("value", [{"x": object()}, [b"bytes"]])
def test_what_json_cannot_hold_is_refused_with_a_type_error(value):
    with pytest.raises(TypeError, match="is not JSON serialisable"):
        _dumps(value)
