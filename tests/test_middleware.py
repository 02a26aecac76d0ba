"""Nothing answers 500, and client errors keep their own status."""

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory

from telemetry.middleware import NeverServerErrorMiddleware


def middleware():
    return NeverServerErrorMiddleware(lambda request: None)


@pytest.mark.parametrize("exc", [Http404("x"), PermissionDenied("x")])
def test_client_errors_are_left_to_django(exc):
    assert middleware().process_exception(RequestFactory().get("/x"), exc) is None


def test_an_unexpected_exception_becomes_a_503_with_retry_after(settings):
    settings.DEBUG = False
    response = middleware().process_exception(RequestFactory().get("/x"), ValueError("boom"))
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert b"boom" not in response.content
    # A crash says "server": unlike a database or cache outage, it is a bug to look at.
    assert json.loads(response.content)["detail"] == "server unavailable, retry later"
