"""Daily IP-salt rotation: today's and tomorrow's salts exist, salts past 48 hours are destroyed.

Destroying a salt is what makes yesterday's IP hashes unlinkable, so this runs hourly.
"""

import datetime as dt
from dataclasses import dataclass

from telemetry.ingest.privacy import SALT_KEEP_HOURS, forget_salts, salt_for
from telemetry.models import IpSalt
from telemetry.services.stats import day_start


@dataclass
class Rotation:
    created: list[dt.date]
    destroyed: int

    @property
    def rows(self) -> int:
        return len(self.created) + self.destroyed


def rotate_salts(*, now: dt.datetime) -> Rotation:
    """Ensure today's and tomorrow's salts; destroy every salt whose day began over 48 h ago."""
    today = now.astimezone(dt.UTC).date()
    wanted = [today, today + dt.timedelta(days=1)]
    have = set(IpSalt.objects.filter(day__in=wanted).values_list("day", flat=True))
    created = [day for day in wanted if day not in have]
    for day in created:
        salt_for(day)  # privacy owns salt creation (and its race with ingest)
    limit = now - dt.timedelta(hours=SALT_KEEP_HOURS)
    old = [d for d in IpSalt.objects.filter(day__lte=limit.date()).values_list("day", flat=True)]
    expired = [d for d in old if day_start(d) < limit]
    destroyed, _ = IpSalt.objects.filter(day__in=expired).delete()
    forget_salts()
    return Rotation(created=created, destroyed=destroyed)
