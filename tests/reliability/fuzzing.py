"""Hostile requests for every front door, and the one pass rule the fuzz tests and bench/fuzz.py
share: no 5xx, no stack trace in any body, every 4xx a body the contract documents.

Requests start from a valid body of each route and mutate it (fields dropped, retyped, replaced by
hostile strings, extra keys), or are arbitrary JSON, bytes or broken text; methods, paths,
content types, keys and origins vary too. Each contract's documented messages are read from the
constants table at the top of its module (STYLE.md convention 2), so a new message is documented
by adding it there.
"""

import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from importlib import import_module
from urllib.parse import quote

from hypothesis import strategies as st

from telemetry.contracts import MODULES

# Strings that have broken servers before: NUL, lone surrogates, huge and odd numbers as text,
# path tricks, markup, overlong values, right-to-left marks, SQL and format-string fragments.
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\u202e",
    "\ufeff",
    "../../etc/passwd",
    "%00",
    "%s%s%n",
    "{0}{1}",
    "' OR 1=1 --",
    '"; DROP TABLE telemetry_event; --',
    "<script>alert(1)</script>",
    "9" * 400,
    "-0",
    "1e309",
    "NaN",
    "x" * 5000,
    "ünïcödé ✓ 🚀",
    "2026-02-30T25:61:61Z",
    "0000-00-00T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z",
    "2026-W99",
    "inst_00000001",
]

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_TEXT),
)
JSON_VALUES = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _mutate(template: dict) -> st.SearchStrategy[dict]:
    """A template with each field kept, dropped or replaced, plus perhaps unknown keys."""

    def one(key, value):
        return st.one_of(
            st.just((key, value)),
            st.just((key, value)),
            st.just(None),
            JSON_VALUES.map(lambda v: (key, v)),
            st.sampled_from(HOSTILE_TEXT).map(lambda v: (key, v)),
        )

    fields = st.tuples(*(one(k, v) for k, v in template.items()))
    extra = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2)
    return st.builds(
        lambda kept, more: {**dict(kv for kv in kept if kv is not None), **more}, fields, extra
    )


@dataclass
class Route:
    """One route of a front door: its path, methods, and a valid body (None: no body)."""

    path: str
    methods: tuple[str, ...] = ("POST",)
    body: dict | None = None
    batch_key: str | None = None  # the body is {batch_key: [template, …]}
    top_level_list: bool = False  # the body may be a JSON array of templates


@dataclass
class Door:
    contract: str
    routes: list[Route]
    content_types: list[str] = field(default_factory=lambda: ["application/json"])


def doors(now: dt.datetime) -> dict[str, Door]:
    iso = now.isoformat()
    ms = int(now.timestamp() * 1000)
    week = "{}-W{:02d}".format(*now.isocalendar()[:2])
    native = {
        "install_id": "inst_0001abcd",
        "name": "app.start",
        "timestamp": iso,
        "event_id": "evt_0001abcd",
        "app_version": "1.0.0",
        "os": "linux",
        "properties": {"command": "init", "n": 1},
    }
    voicemode = {
        "event_id": "0123456789abcdef",
        "telemetry_id": str(uuid.UUID(int=1)),
        "timestamp": iso,
        "environment": {"os": "Linux", "version": "7.0.1", "install_method": "uv"},
        "usage": {"total_sessions": 3, "total_exchanges": 12},
    }
    domscribe = {
        "protocol_version": "1.0.0",
        "daemon_version": "1.2.3",
        "session_id": "sess_12345678",
        "platform": "linux",
        "node_version": "v22.1.0",
        "primary_framework": "react",
    }
    baofeng = {
        "event_type": "flash_success",
        "occurred_at": iso,
        "session_id": "sess-0001-abcd",
        "message": "Flash complete",
        "model": "UV-5RM",
        "app_version": "abc1234",
        "log_lines_json": json.dumps(["connected"]),
        "metadata_json": json.dumps({"source": "web"}),
    }
    pryx = {
        "correlation_id": "corr-0001-abcdef",
        "timestamp": ms,
        "level": "info",
        "category": "provider",
        "device_id": "pryx-1767225600000000000",
        "session_id": "sess-1",
        "version": "0.9.1",
    }
    log_entry = {"timestamp": iso, "level": "error", "message": "boom", "fields": {"a": 1}}
    axiom = {"_time": iso, "event_type": "request", "customer_id": "org_2abcDEF", "status": 200}
    return {
        "native": Door(
            "native",
            [Route("api/v1/events", ("POST", "GET", "PUT"), native, "events")],
        ),
        "voicemode": Door(
            "voicemode",
            [Route("telemetry", ("POST", "OPTIONS", "GET", "HEAD"), voicemode)],
            ["application/json", "text/plain"],
        ),
        "domscribe": Door(
            "domscribe",
            [
                Route("v1/session", ("POST", "GET", "PUT", "DELETE"), domscribe),
                Route(f"v1/wau/{week}", ("GET", "POST")),
                Route("healthz", ("GET",)),
            ],
        ),
        "baofeng": Door(
            "baofeng",
            [
                Route("event", ("POST", "OPTIONS", "GET"), baofeng),
                Route("client-log", ("POST",), {**baofeng, "event_type": "client_error"}),
                Route("metrics/flash-count", ("GET",)),
                Route("recent?limit=5", ("GET",)),
                Route("health", ("GET",)),
                Route("count", ("GET",)),
                Route("increment", ("POST",), {"sessionId": "sess-0001-abcd"}),
            ],
            ["text/plain", "application/json"],
        ),
        "pryx": Door(
            "pryx",
            [
                Route("api/telemetry/ingest", ("POST",), pryx, top_level_list=True),
                Route("api/telemetry/batch", ("POST",), pryx, "events"),
                Route("api/telemetry/batch/b-0001", ("GET",)),
                Route("api/telemetry/query?limit=5&level=info", ("GET",)),
                Route("api/v1/logs", ("POST",), log_entry, "logs"),
            ],
        ),
        "axiom": Door(
            "axiom",
            [Route("v1/datasets/events/ingest", ("POST", "GET"), axiom, top_level_list=True)],
            ["application/json", "application/x-ndjson"],
        ),
    }


@dataclass
class Request:
    method: str
    path: str  # under /p/<slug>/
    body: bytes
    content_type: str
    headers: dict[str, str]

    def send(self, client, slug: str):
        return client.generic(
            self.method,
            f"/p/{slug}/{self.path}",
            data=self.body,
            content_type=self.content_type,
            **self.headers,
        )


def _body_for(route: Route) -> st.SearchStrategy[bytes]:
    def dumps(value) -> bytes:
        # ensure_ascii keeps lone surrogates as \\ud800 escapes: valid JSON text, hostile value.
        return json.dumps(value).encode()

    options = [
        JSON_VALUES.map(dumps),
        st.binary(max_size=200),
        st.sampled_from(
            [b"", b"{", b"[", b"null", b"{}", b"[]", b'{"a":NaN}', b"[" * 5000 + b"]" * 5000]
        ),
    ]
    if route.body is not None:
        one = _mutate(route.body)
        options += [one.map(dumps), one.map(dumps), st.just(dumps(route.body))]
        if route.batch_key:
            options.append(
                st.lists(one, max_size=5).map(lambda items: dumps({route.batch_key: items}))
            )
        if route.top_level_list:
            options.append(st.lists(one, max_size=5).map(dumps))
            options.append(
                st.lists(one, max_size=4).map(lambda items: b"\n".join(map(dumps, items)))
            )
    return st.one_of(options)


_PATH_JUNK = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20
).map(lambda s: quote(s, safe=""))


def requests(door: Door, *, ingest_key: str, operator_token: str, origin: str):
    """Hypothesis strategy of Requests against `door`, valid credentials included."""

    @st.composite
    def build(draw) -> Request:
        route = draw(st.sampled_from(door.routes))
        method = draw(st.sampled_from((*route.methods, *route.methods, "PATCH", "DELETE")))
        path = route.path
        path = draw(
            st.one_of(
                st.just(path),
                st.just(path),
                st.just(path),
                _PATH_JUNK.map(lambda j: f"{path}/{j}"),
                _PATH_JUNK,
                st.just(path + "/"),
                st.just(path + "?x=%00&limit=-1&start=abc"),
            )
        )
        body = draw(_body_for(route)) if method not in ("GET", "HEAD", "OPTIONS") else b""
        content_type = draw(
            st.sampled_from(
                [*door.content_types, *door.content_types, "", "multipart/form-data; boundary=x"]
            )
            | st.text(max_size=30).filter(lambda s: "\n" not in s and "\r" not in s)
        )
        headers: dict[str, str] = {}
        auth = draw(
            st.sampled_from(
                [
                    f"Bearer {ingest_key}",
                    f"Bearer {ingest_key}",
                    f"Bearer {operator_token}",
                    None,
                    "Bearer ",
                    "Bearer tk_wrong",
                    "Basic dXNlcjpwYXNz",
                    "Bearer \x00",
                ]
            )
        )
        if auth is not None:
            headers["HTTP_AUTHORIZATION"] = auth
        if draw(st.booleans()):
            headers["HTTP_ORIGIN"] = draw(
                st.sampled_from([origin, "https://evil.example", "null", ""])
            )
        if draw(st.booleans()):
            headers["HTTP_X_FORWARDED_FOR"] = draw(
                st.sampled_from(["203.0.113.9", "garbage", "1.2.3.4, 10.0.0.1", "::1"])
            )
        if "?" not in path and method == "GET" and draw(st.booleans()):
            path += "?token=" + quote(draw(st.sampled_from([operator_token, "wrong", ""])))
        return Request(method, path, body, content_type, headers)

    return build()


def cases(default: int) -> int:
    """Cases per target: the bounded CI default, or bench/fuzz.py's TM_FUZZ_CASES."""
    return int(os.environ.get("TM_FUZZ_CASES", default))


def record(target: str, sent: int) -> None:
    """Append a target's case count to bench/fuzz.py's report file, when it asked for one."""
    path = os.environ.get("TM_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"target": target, "cases": sent}) + "\n")


# --- The pass rule -------------------------------------------------------------------------------

TRACE_MARKERS = (b"Traceback (most recent call last)", b'File "/', b"django.core.exceptions")


def documented_messages(contract: str) -> list[re.Pattern]:
    """The module's message table: every upper-case str constant, `{field}` matching any text."""
    module = import_module(MODULES[contract])
    patterns = []
    for name, value in vars(module).items():
        if name.isupper() and isinstance(value, str):
            parts = re.split(r"\{[a-z_]+\}", value)
            patterns.append(re.compile("^" + ".+".join(map(re.escape, parts)) + "$", re.S))
    return patterns


def error_message(contract: str, response) -> str | None:
    """The message of a 4xx in the contract's own shape, or None if the shape is not its own."""
    body = response.content
    content_type = response.get("Content-Type", "")
    if contract == "domscribe" or (contract == "pryx" and content_type.startswith("text/plain")):
        return body.decode()
    if contract == "voicemode" and content_type.startswith("text/plain"):
        return body.decode()  # the worker's plain "Not Found"
    if contract == "baofeng" and body == b"" and response.status_code == 403:
        return "Origin not allowed"  # the worker's empty preflight refusal
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if contract == "axiom":
        return data.get("message") if data.get("code") == response.status_code else None
    if contract == "baofeng":
        return data.get("error") if data.get("ok") is False else None
    message = data.get("error")
    return message if isinstance(message, str) else None


def problems(contract: str, response, patterns: list[re.Pattern], method: str = "GET") -> list[str]:
    """What is wrong with `response` under the pass rule (empty: it passes).

    A HEAD answer has no body by HTTP's rules, so only its status is judged.
    """
    found = []
    status = response.status_code
    body = response.content
    if status >= 500:
        found.append(f"{status} server error: {body[:200]!r}")
    if any(marker in body for marker in TRACE_MARKERS):
        found.append(f"stack trace in body: {body[:200]!r}")
    if 400 <= status < 500 and method != "HEAD":
        if contract == "native":
            try:
                data = json.loads(body)
                ok = isinstance(data.get("error"), str) and isinstance(data.get("detail"), str)
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                found.append(f"{status} without {{error, detail}}: {body[:200]!r}")
        else:
            message = error_message(contract, response)
            if message is None or not any(p.match(message) for p in patterns):
                found.append(f"{status} undocumented body: {body[:200]!r}")
    return found
