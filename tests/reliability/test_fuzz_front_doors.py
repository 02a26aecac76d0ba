"""Hypothesis-generated bodies, headers, methods and paths against every seed front door.

Pass rule (tests/reliability/fuzzing.py): no 5xx, no stack trace, every 4xx a documented body.
A bounded run here; bench/fuzz.py runs the same generators for thousands of cases.
"""

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings

from tests.factories import make_project
from tests.reliability import fuzzing

ORIGIN = "https://app.example.org"
CASES_PER_DOOR = 80


def fuzz_door(contract: str, cases: int) -> int:
    """Run `cases` generated requests against a fresh project of `contract`; return the count."""
    p = make_project(
        contract=contract,
        allowed_origins=[ORIGIN],
        install_rate="1000/h",
        ip_rate="100000/h",
    )
    door = fuzzing.doors(timezone.now())[contract]
    patterns = fuzzing.documented_messages(contract)
    client = Client()
    sent = 0

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        fuzzing.requests(
            door, ingest_key=p.ingest_key, operator_token=p.operator_token, origin=ORIGIN
        )
    )
    def one(request):
        nonlocal sent
        sent += 1
        response = request.send(client, p.project.slug)
        found = fuzzing.problems(contract, response, patterns, request.method)
        assert not found, f"{request.method} {request.path} {request.body[:200]!r}: {found}"

    one()
    return sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "contract", ["native", "voicemode", "domscribe", "baofeng", "pryx", "axiom"]
)
def test_no_front_door_answers_hostile_input_with_a_server_error_or_an_undocumented_body(
    contract,
):
    wanted = fuzzing.cases(CASES_PER_DOOR)
    sent = fuzz_door(contract, wanted)
    fuzzing.record(f"front door {contract}", sent)
    assert sent >= wanted * 0.9  # hypothesis ran (nearly) every case asked for


def test_the_pass_rule_catches_a_server_error_a_trace_and_an_undocumented_4xx():
    from django.http import HttpResponse

    patterns = fuzzing.documented_messages("pryx")
    assert (
        fuzzing.problems("pryx", HttpResponse(b'{"error":"Invalid JSON"}', status=400), patterns)
        == []
    )
    assert fuzzing.problems("pryx", HttpResponse(b"{}", status=500), patterns)
    assert fuzzing.problems("pryx", HttpResponse(b'{"error":"whatever"}', status=400), patterns)
    assert fuzzing.problems(
        "pryx", HttpResponse(b"Traceback (most recent call last):", status=200), patterns
    )
    assert fuzzing.problems("native", HttpResponse(b'{"error":"x"}', status=400), [])


@pytest.mark.django_db
def test_a_path_ending_in_a_newline_reaches_the_contracts_own_404(client):
    # Found by the fuzzer: `path:` does not match "\n", so Django's HTML 404 page answered.
    p = make_project(contract="axiom")
    r = client.post(
        f"/p/{p.project.slug}/v1/datasets/events/ingest/%0A",
        data="[]",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert r.status_code == 404
    assert r.json() == {"message": "not found", "code": 404}
