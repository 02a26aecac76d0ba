"""A settable clock for the rate limiter: django-ratelimit and telemetry.ingest.limits read
`time.time()` for their windows; tests move it to exact edges (midnight, a window's end)."""

import datetime as dt
import types

import django_ratelimit.core

from telemetry.ingest import limits


class LimiterClock:
    def __init__(self, monkeypatch, at: dt.datetime) -> None:
        self.now = at
        fake = types.SimpleNamespace(time=lambda: self.now.timestamp())
        monkeypatch.setattr(django_ratelimit.core, "time", fake)
        monkeypatch.setattr(limits, "time", fake)

    def set(self, at: dt.datetime) -> None:
        self.now = at

    def counter(self, group: str, value: str, rate: str) -> limits.Usage:
        """The counter the limiter would charge now, read without charging it (n=0)."""
        return limits.charge([limits.Charge(group, value, rate, 0)])[0]
