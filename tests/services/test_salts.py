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


# The rule: a salt is destroyed once its UTC day began more than 48 hours ago (strictly).
@pytest.mark.parametrize(
    ("after", "kept"),
    [(dt.timedelta(0), True), (dt.timedelta(microseconds=1), False)],
)
def test_a_salt_exactly_48_hours_old_is_kept_and_one_microsecond_later_destroyed(after, kept):
    from telemetry.services.privacy_audit import audit

    day = dt.date(2025, 6, 13)
    now = dt.datetime(2025, 6, 15, tzinfo=dt.UTC) + after  # 48 h after June 13 began, + after
    IpSalt.objects.create(day=day, salt="00" * 32)
    stale = [f.kind for f in audit(now=now, include_cache=False).findings]
    assert stale == ([] if kept else ["stale_salt"])  # the audit applies the same edge
    rotate_salts(now=now)
    assert IpSalt.objects.filter(day=day).exists() is kept
