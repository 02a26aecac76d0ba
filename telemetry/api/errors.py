"""DRF's errors in the platform's one JSON error shape: {"error": code, "detail": message}."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = getattr(exc, "detail", str(exc))
    code = getattr(exc, "default_code", "error")
    if isinstance(detail, dict | list):
        response.data = {"error": code, "detail": detail}
    else:
        response.data = {"error": getattr(detail, "code", code) or code, "detail": str(detail)}
    return response
