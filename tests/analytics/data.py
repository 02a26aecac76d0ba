"""Random usage sent through the real native API, and brute-force answers computed from the raw
events it stored: the yardstick every rollup-based selector is held to."""

import datetime as dt
import hashlib
import json
import random
from collections import defaultdict

from django.utils import timezone

from telemetry.analytics.errors import BAOFENG_ERRORS, LEVELS, fingerprint_parts
from telemetry.models import Event
from tests.factories import fold, make_project

PROVIDERS = ["openai", "kokoro", "whisper-local"]


def random_events(rng: random.Random, *, installs: int, events: int, days: int, now=None):
    now = now or timezone.now()
    ids = [f"inst_{rng.getrandbits(48):012x}" for _ in range(installs)]
    out = []
    for _ in range(events):
        install = rng.choice(ids)
        moment = now - dt.timedelta(seconds=rng.randrange(days * 86400))
        props = {
            "environment": {"os": rng.choice(["Linux", "Darwin", "Windows"])},
            "duration_ms": rng.randrange(1, 5000),
            "ok": rng.random() < 0.8,
        }
        if rng.random() < 0.6:
            # The native contract allows three levels of nesting.
            props["provider_usage"] = {
                "tts": {p: rng.randrange(0, 5) for p in rng.sample(PROVIDERS, 2)}
            }
        out.append(
            {
                "install_id": install,
                "name": rng.choice(["app.start", "session.start", "tts.request"]),
                "timestamp": moment.isoformat(),
                "event_id": f"evt_{rng.getrandbits(64):016x}",
                "app_version": rng.choice(["1.0.0", "1.1.0", "1.2.0"]),
                "os": rng.choice(["linux", "darwin", "windows"]),
                "properties": props,
            }
        )
    return out


def send(client, key: str, events: list[dict]) -> None:
    for start in range(0, len(events), 1000):
        body = json.dumps({"events": events[start : start + 1000]})
        r = client.post(
            "/api/v1/events",
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        assert r.status_code == 202, r.content
        assert r.json()["accepted"] == len(events[start : start + 1000]), r.json()
    fold()


def seeded_project(client, *, seed: int = 7, installs=25, events=600, days=70, **kwargs):
    p = make_project(install_rate="100000/h", ip_rate="100000/h", **kwargs)
    send(
        client,
        p.ingest_key,
        random_events(rng=random.Random(seed), installs=installs, events=events, days=days),
    )
    return p


class Brute:
    """Answers computed straight from the stored events, with no rollup involved."""

    def __init__(self, project) -> None:
        self.rows = list(
            Event.objects.filter(project=project).values_list(
                "install_id", "timestamp", "name", "properties"
            )
        )
        self.first = {}
        self.days = defaultdict(set)  # day -> installs
        for install, ts, _, _ in self.rows:
            day = ts.astimezone(dt.UTC).date()
            self.days[day].add(install)
            if install not in self.first or ts < self.first[install]:
                self.first[install] = ts

    def active(self, start: dt.date, end: dt.date) -> int:
        seen = set()
        for day, installs in self.days.items():
            if start <= day <= end:
                seen |= installs
        return len(seen)

    def new(self, start: dt.date, end: dt.date) -> int:
        return sum(1 for ts in self.first.values() if start <= ts.date() <= end)

    def events(self, start: dt.date, end: dt.date) -> int:
        return sum(1 for _, ts, _, _ in self.rows if start <= ts.date() <= end)

    def cohort(self, start: dt.date, step: int, k: int) -> int:
        members = {
            i for i, ts in self.first.items() if start <= ts.date() < start + dt.timedelta(step)
        }
        lo = start + dt.timedelta(days=step * k)
        hi = lo + dt.timedelta(days=step - 1)
        active = set()
        for day, installs in self.days.items():
            if lo <= day <= hi:
                active |= installs
        return len(members & active)


def brute_error_groups(project, start, end):
    """The fingerprint grouping done the slow way: every event read and grouped in Python."""
    groups = {}
    events = Event.objects.filter(
        project=project,
        timestamp__gte=dt.datetime.combine(start, dt.time.min, dt.UTC),
        timestamp__lt=dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, dt.UTC),
    ).order_by("-timestamp")
    for e in events:
        props = e.properties if isinstance(e.properties, dict) else {}
        error_like = (
            e.name.startswith("error")
            or e.name in BAOFENG_ERRORS
            or props.get("event_type") in BAOFENG_ERRORS
            or props.get("level") in LEVELS
        )
        if not error_like:
            continue
        kind, message, line = fingerprint_parts(e.name, props)
        key = hashlib.sha256(f"{kind}\0{message}\0{line}".encode()).hexdigest()[:12]
        g = groups.setdefault(key, {"count": 0, "installs": set(), "last": e.timestamp})
        g["count"] += 1
        g["first"] = e.timestamp
        if e.install_id:
            g["installs"].add(e.install_id)
    return groups
