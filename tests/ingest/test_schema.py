"""telemetry.ingest.schema: the property checks, held to a plain recursive reading of the rules."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.ingest.schema import MAX_DEPTH, MAX_STRING, InvalidEvent, validate_properties
from telemetry.models import Project


def expected_error(properties: dict) -> str | None:
    """The field the rules name for `properties` (None: accepted): nesting deeper than
    MAX_DEPTH first, then the first string over MAX_STRING, in document order."""

    def depth(value: Any) -> int:
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            return 0
        return 1 + max((depth(v) for v in value), default=0)

    def long_string(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if len(value) > MAX_STRING else None
        children = []
        if isinstance(value, dict):
            children = [(f"{path}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        for child_path, v in children:
            found = long_string(v, child_path)
            if found:
                return found
        return None

    if depth(properties) > MAX_DEPTH:
        return "properties"
    return long_string(properties, "properties")


strings = st.sampled_from(["", "ok", "x" * MAX_STRING, "y" * (MAX_STRING + 1)])
values = st.recursive(
    strings | st.integers() | st.booleans() | st.none(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=4), values, max_size=5))
def test_nesting_and_long_strings_are_refused_naming_the_first_offender(properties):
    project = Project(slug="schema", strict=False, property_schema={})
    want = expected_error(properties)
    try:
        validate_properties(properties, project=project)
        got = None
    except InvalidEvent as exc:
        got = exc.field
    assert got == want


def test_a_long_string_deep_in_the_properties_is_named_by_its_path():
    project = Project(slug="schema", strict=False, property_schema={})
    for properties, field in (
        ({"a": {"b": "x" * (MAX_STRING + 1)}}, "properties.a.b"),
        ({"a": ["ok", {"c": "x" * (MAX_STRING + 1)}]}, "properties.a[1].c"),
        ({"s": "x" * (MAX_STRING + 1)}, "properties.s"),
    ):
        try:
            validate_properties(properties, project=project)
        except InvalidEvent as exc:
            assert exc.field == field
        else:
            raise AssertionError(f"{properties} accepted")
    assert validate_properties({"a": {"b": {"c": 1}}}, project=project) == {"a": {"b": {"c": 1}}}
