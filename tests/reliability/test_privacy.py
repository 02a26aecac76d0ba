"""The privacy audit: after traffic from over 1,000 client IPs on every front door, no raw IP and
no ingest key in the database, the cache or the logs; stale salts found and then gone; a deleted
install leaves no row; and the `privacy_audit` command that checks a live installation.
"""

import datetime as dt
import io
import ipaddress
import json
import logging
import uuid

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from telemetry.models import Event, IpSalt
from telemetry.services.deletion import delete_install
from telemetry.services.privacy_audit import addresses, audit
from telemetry.services.salts import rotate_salts
from tests.cachekeys import LimiterSpy, cache_entries, leaks
from tests.factories import make_project, native_event
from tests.ingest.test_privacy import _dump_database

CONTRACTS = ["native", "voicemode", "domscribe", "baofeng", "pryx", "axiom"]
IPS_PER_DOOR = 170  # 6 doors: 1,020 distinct client addresses


def client_ips(door: int):
    """Distinct public-looking v4 and v6 addresses: every third one IPv6."""
    for i in range(IPS_PER_DOOR):
        if i % 3 == 0:
            yield str(ipaddress.IPv6Address(f"2001:db8:{door:x}::{i + 1:x}"))
        else:
            yield f"198.{18 + door}.{i // 250}.{i % 250 + 1}"


def send(client: Client, contract: str, p, install: str, ip: str):
    """One valid request of `contract` for `install` from `ip`, through the trusted proxy."""
    now = timezone.now()
    iso = now.isoformat()
    slug = f"/p/{p.project.slug}"
    meta = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": f"{ip}, 10.0.0.7"}
    key = {"HTTP_AUTHORIZATION": f"Bearer {p.ingest_key}"}
    uid = uuid.uuid4().hex
    if contract == "native":
        body, path, ctype = native_event(install_id=install), "/api/v1/events", "application/json"
        meta.update(key)
    elif contract == "voicemode":
        body = {
            "event_id": uid[:16],
            "telemetry_id": install,
            "timestamp": iso,
            "environment": {"os": "Linux", "version": "7.0.1"},
            "usage": {"total_sessions": 1},
        }
        path, ctype = "/telemetry", "application/json"
    elif contract == "domscribe":
        body = {
            "protocol_version": "1.0.0",
            "daemon_version": "1.2.3",
            "session_id": install,
            "platform": "linux",
            "node_version": "v22.1.0",
            "primary_framework": "react",
        }
        path, ctype = "/v1/session", "application/json"
    elif contract == "baofeng":
        body = {
            # With no session a success is refused (it must name one); an error is not.
            "event_type": "flash_error" if install else "flash_success",
            "occurred_at": iso,
            "session_id": install,
            "message": "Timeout writing block 3",
        }
        path, ctype = "/event", "text/plain"
    elif contract == "pryx":
        body = {
            "correlation_id": f"corr-{uid}",
            "timestamp": int(now.timestamp() * 1000),
            "level": "info",
            "category": "provider",
            "device_id": install,
        }
        if not install:
            body = []  # refused: 400 "No events provided"
        path, ctype = "/api/telemetry/ingest", "application/json"
        meta.update(key)
    else:
        body = [{"_time": iso, "event_type": "request", "customer_id": install, "status": 200}]
        if not install:
            body = [{"_time": "not a time"}]  # refused: its one event fails
        path, ctype = "/v1/datasets/events/ingest", "application/json"
        meta.update(key)
    if contract != "native":
        path = slug + path
    return client.post(path, data=json.dumps(body), content_type=ctype, **meta)


def install_id(contract: str) -> str:
    if contract == "voicemode":
        return str(uuid.uuid4())
    return f"inst_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def captured_logs():
    """Every record of the platform's and Django's loggers (they do not all propagate)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", "telemetry", "django", "django.request")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield stream
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"])
def test_a_thousand_client_ips_on_every_door_leave_no_address_or_key_anywhere(
    captured_logs, monkeypatch
):
    spy = LimiterSpy(monkeypatch)
    client = Client()
    projects, sent = {}, []
    for door, contract in enumerate(CONTRACTS):
        p = make_project(contract=contract, install_rate="1000/h", ip_rate="1000/h")
        projects[contract] = p
        for ip in client_ips(door):
            r = send(client, contract, p, install_id(contract), ip)
            assert r.status_code < 300, (contract, r.status_code, r.content)
            sent.append(ip)
        # One refused request per door too: refusals are logged and counted differently.
        stored = Event.objects.count()
        r = send(client, contract, p, "", sent[-1])
        assert r.status_code < 500 and Event.objects.count() == stored, (contract, r.content)
    assert len(set(sent)) >= 1000
    assert Event.objects.count() >= len(sent)
    assert len(set(Event.objects.values_list("ip_hash", flat=True))) >= 1000

    entries = cache_entries()
    assert len(entries) >= len(sent)  # the real counters, listed on either backend
    assert leaks(sent, spy) == []  # nor any limiter keyed on a raw address
    dump, cache, logs = _dump_database(), repr(entries), captured_logs.getvalue()
    assert logs  # the handler really captured the platform's logging
    for where, text in (("database", dump), ("cache", cache), ("logs", logs)):
        leaked = [ip for ip in sent if ip in text]
        assert not leaked, f"{len(leaked)} raw IPs in the {where}, e.g. {leaked[:1]}"
        for p in projects.values():
            assert p.ingest_key not in text and p.operator_token not in text, where
    # The audit agrees, and scanned what the test wrote.
    report = audit(now=timezone.now())
    assert report.ok, report.findings
    assert report.values > len(sent) and report.cache_entries > 0


@pytest.mark.django_db
def test_the_audit_finds_an_address_that_reached_a_column_and_names_it():
    p = make_project()
    Event.objects.create(
        project=p.project,
        install_id="inst_00000001",
        name="app.start",
        timestamp=timezone.now(),
        received_at=timezone.now(),
        properties={"peer": "seen from 203.0.113.77 and 2001:db8::42"},
        app_version="10.0.0.1",
    )
    report = audit(now=timezone.now())
    assert [(f.kind, f.where, f.count) for f in report.findings] == [
        ("ip", "telemetry_event.properties", 2)
    ]
    assert report.findings[0].sample == "203.…"  # masked, never the address itself
    assert report.excluded == [
        {
            "where": "telemetry_event.app_version",
            "rule": "version-column",
            "sample": "10.…",
            "count": 1,
        }
    ]


@pytest.mark.django_db
def test_the_audit_finds_a_raw_ingest_key():
    p = make_project()
    Event.objects.create(
        project=p.project,
        name="oops",
        timestamp=timezone.now(),
        received_at=timezone.now(),
        properties={"note": f"key was {p.ingest_key}"},
    )
    kinds = [(f.kind, f.where) for f in audit(now=timezone.now()).findings]
    assert kinds == [("secret", "telemetry_event.properties")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("ip 203.0.113.9.", ["203.0.113.9"]),
        ("::ffff:192.0.2.1", ["::ffff:192.0.2.1"]),
        ("[2001:db8::1]:443", ["2001:db8::1"]),
        ("1.2.3.4.5", []),  # a longer dotted run: a version or an OID, no address
        ("999.1.1.1", []),
        ("at 2026-11-25T10:00:00Z", []),
        ("iad1::abc std::fmt aa:bb:cc:dd:ee:ff", []),
        ("v1.2.3.4", []),  # excluded (v-prefixed), reported apart
    ],
)
def test_candidates_are_validated_as_addresses(text, found):
    assert addresses(text)[0] == found


@pytest.mark.django_db
def test_stale_salts_are_reported_then_gone_after_rotation():
    now = timezone.now()
    IpSalt.objects.create(day=(now - dt.timedelta(days=3)).date(), salt="00" * 32)
    report = audit(now=now)
    assert [f.kind for f in report.findings] == ["stale_salt"]
    rotate_salts(now=now)
    assert audit(now=now).ok
    limit = now - dt.timedelta(hours=48)
    days = IpSalt.objects.values_list("day", flat=True)
    assert all(dt.datetime.combine(d, dt.time.min, tzinfo=dt.UTC) >= limit for d in days)


@pytest.mark.django_db
@pytest.mark.parametrize("contract", CONTRACTS)
def test_a_deleted_install_leaves_no_row(client, contract):
    p = make_project(contract=contract)
    install = install_id(contract)
    for i in range(3):
        assert send(client, contract, p, install, f"192.0.2.{i + 1}").status_code < 300
    other = install_id(contract)
    assert send(client, contract, p, other, "192.0.2.9").status_code < 300
    assert install in _dump_database()
    delete_install(project=p.project, install_id=install)
    dump = _dump_database()
    assert install not in dump
    assert other in dump  # only that install went


@pytest.mark.django_db
def test_the_command_exits_1_and_names_the_column_when_it_finds_an_address(capsys):
    p = make_project()
    call_command("privacy_audit")
    assert "ok: nothing found" in capsys.readouterr().out
    Event.objects.create(
        project=p.project,
        name="leak",
        timestamp=timezone.now(),
        received_at=timezone.now(),
        session_id="198.51.100.23",
    )
    with pytest.raises(SystemExit) as exit_:
        call_command("privacy_audit", "--json")
    assert exit_.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["findings"] == [
        {"kind": "ip", "where": "telemetry_event.session_id", "sample": "198.…", "count": 1}
    ]
    assert "198.51.100.23" not in json.dumps(report)
