"""Request helpers every front door shares: bounded body reads, JSON parsing, media types."""

import json
import math
import re
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException


class BodyTooLarge(Exception):
    pass


class BodyUnreadable(Exception):
    pass


def declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The body, at most `limit` bytes, whether declared by Content-Length or streamed chunked."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge
    try:
        if length is None and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream = request.META.get("wsgi.input")
            body = stream.read(limit + 1) if stream is not None else b""
        else:
            body = request.body
    except RequestDataTooBig:
        raise BodyTooLarge from None
    except (OSError, RawPostDataException) as exc:
        raise BodyUnreadable from exc
    if len(body) > limit:
        raise BodyTooLarge
    return body


# In parsed JSON, NUL and lone UTF-16 surrogates can only come from a \u escape: a raw control
# character is not JSON and an encoded surrogate is not UTF-8.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")


def plain_text(body: bytes) -> bool:
    """Whether no string parsed from this JSON body can hold NUL or a lone surrogate (one scan
    of the bytes instead of a walk over every parsed string; a paired surrogate escape, such as
    an emoji, answers False and takes the walk)."""
    return _UNSTORABLE_ESCAPE.search(body) is None


def _finite(text: str) -> float:
    # 1e400 is valid JSON that no float holds: read as infinity, no JSON column would store it.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call: json.loads with options builds a decoder and its scanner each
# time, which cost more than parsing a small body (2.6 µs a call; an import parses two JSON
# columns a row). Shared across threads as json.loads shares its default decoder.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)


def parse_json(body: bytes | str) -> Any:
    """json.loads that rejects NaN/Infinity (and numbers that overflow to it), bad UTF-8 and
    absurd nesting with ValueError."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body  # a ValueError if bad
    if text.startswith("\ufeff"):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def compact_json(
    status: int,
    body: Any,
    *,
    content_type: str = "application/json",
    retry_after: int | None = None,
) -> HttpResponse:
    """A JSON reply written as JavaScript's JSON.stringify writes it (no spaces, raw UTF-8),
    so a front door's bytes match the worker it replaces; never cached."""
    response = HttpResponse(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type=content_type,
    )
    response["Cache-Control"] = "no-store"
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def media_type(request: HttpRequest) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
