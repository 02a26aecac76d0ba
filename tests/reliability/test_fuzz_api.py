"""Schemathesis against the OpenAPI schema at /api/v1/schema: every operation, positive and
negative cases, with a valid ingest key / operator token (and wrong ones) on the WSGI app.

Pass rule: no 5xx, no stack trace, every status the schema documents, every 4xx a JSON
{"error", "detail"}. Stateful runs do not fit: no operation returns an id another one takes
(ingest answers counts, analytics read by the project's slug), so the schema has no links.
"""

import json

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.factories import make_project, native_event
from tests.reliability import fuzzing

CASES_PER_OPERATION_AND_MODE = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def documented_error(response) -> list[str]:
    found = []
    if any(marker in response.content for marker in fuzzing.TRACE_MARKERS):
        found.append(f"stack trace in body: {response.content[:200]!r}")
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
            ok = isinstance(body.get("error"), str) and isinstance(body.get("detail"), str | dict)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            found.append(f"{response.status_code} without {{error, detail}}: {response.content!r}")
    return found


def fuzz_api(cases: int) -> dict[str, int]:
    """Run `cases` positive and `cases` negative cases per operation; return the count per op."""
    p = make_project(install_rate="100000/h", ip_rate="100000/h")
    other = make_project()
    client = Client()
    for _ in range(3):  # something for the analytics to count
        client.post(
            "/api/v1/events",
            data=json.dumps(native_event()),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
        )
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application)
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        ingest = operation.method.upper() == "POST"
        good = p.ingest_key if ingest else p.operator_token
        auth = st.sampled_from(
            [f"Bearer {good}"] * 4
            + [None, "Bearer ", "Bearer wrong", f"Bearer {other.ingest_key}"]
            + ([] if ingest else [f"Bearer {other.operator_token}"])
        )
        slugs = {"slug": p.project.slug} if "{slug}" in operation.path else None
        label = operation.label
        counts[label] = 0
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, path_parameters=slugs)
            if slugs:  # mostly the real project, sometimes any slug at all
                strategy = st.one_of(strategy, strategy, operation.as_strategy(mode))
            counts[label] += _run(strategy, auth, cases)
    return counts


def _run(strategy, auth, cases: int) -> int:
    sent = 0

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, authorization=auth)
    def one(case, authorization):
        nonlocal sent
        sent += 1
        headers = {"Authorization": authorization} if authorization else {}
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)
        found = documented_error(response)
        assert not found, found

    one()
    return sent


@pytest.mark.django_db(transaction=True)
def test_every_operation_survives_schema_driven_fuzzing():
    wanted = fuzzing.cases(CASES_PER_OPERATION_AND_MODE)
    counts = fuzz_api(wanted)
    for label, n in counts.items():
        fuzzing.record(f"api {label}", n)
    assert set(counts) == {
        "POST /api/v1/events",
        "GET /api/v1/projects/{slug}/active",
        "GET /api/v1/projects/{slug}/breakdown",
        "GET /api/v1/projects/{slug}/retention",
    }
    assert all(n >= wanted for n in counts.values()), counts


@pytest.mark.django_db
def test_a_url_no_route_matches_is_a_json_404_under_the_api(client):
    # Found by schemathesis: a slug with spaces matched no route, and Django's HTML page answered.
    r = client.get("/api/v1/projects/%20UNION%20ALL%20/active")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert client.get("/p/not%20a%20slug/x").json()["error"] == "not_found"
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")
