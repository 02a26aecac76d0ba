"""telemetry.services.salts: salts exist ahead of use and are destroyed after 48 hours."""

import datetime as dt

import pytest

from telemetry.models import IpSalt
from telemetry.services.salts import rotate_salts

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 5, 0, tzinfo=dt.UTC)


def test_it_creates_todays_and_tomorrows_salt():
    result = rotate_salts(now=NOW)
    assert sorted(IpSalt.objects.values_list("day", flat=True)) == [
        dt.date(2025, 6, 15),
        dt.date(2025, 6, 16),
    ]
    assert result.created == [dt.date(2025, 6, 15), dt.date(2025, 6, 16)]


def test_it_destroys_salts_whose_day_began_over_48_hours_ago():
    for day in (10, 12, 13, 14):
        IpSalt.objects.create(day=dt.date(2025, 6, day), salt="00" * 32)
    result = rotate_salts(now=NOW)
    # June 13 began 53 h before NOW, June 14 began 29 h before.
    assert sorted(d.day for d in IpSalt.objects.values_list("day", flat=True)) == [14, 15, 16]
    assert result.destroyed == 3


def test_running_it_twice_changes_nothing():
    rotate_salts(now=NOW)
    salts = list(IpSalt.objects.order_by("day").values("day", "salt"))
    again = rotate_salts(now=NOW)
    assert (again.created, again.destroyed) == ([], 0)
    assert list(IpSalt.objects.order_by("day").values("day", "salt")) == salts
