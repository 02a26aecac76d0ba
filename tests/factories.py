"""Small factories for projects and event payloads."""

import datetime as dt
import itertools
import uuid

from django.utils import timezone

from telemetry.services.projects import NewProject, create_project

_n = itertools.count(1)


def make_project(**kwargs) -> NewProject:
    kwargs.setdefault("slug", f"proj-{next(_n)}")
    kwargs.setdefault("install_rate", "1000/h")
    kwargs.setdefault("ip_rate", "10000/h")
    return create_project(**kwargs)


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or timezone.now()).isoformat()


def native_event(**overrides) -> dict:
    event = {
        "install_id": f"inst_{uuid.uuid4().hex[:12]}",
        "name": "app.start",
        "timestamp": iso(),
        "event_id": f"evt_{uuid.uuid4().hex}",
        "app_version": "1.2.3",
        "os": "linux",
        "properties": {"command": "init"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}
