"""telemetry.services.deletion: one install's rows go, everyone else's and the totals stay."""

import datetime as dt

import pytest

from telemetry.models import DailyActivity, DailyCount, Event, Install
from telemetry.services.deletion import UnknownInstall, delete_install
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db

WHEN = dt.datetime(2025, 6, 10, 9, tzinfo=dt.UTC)


def test_it_deletes_every_row_of_the_install_only():
    p = make_project().project
    ingest_at(p, WHEN, "inst_gone_0001", n=3)
    ingest_at(p, WHEN + dt.timedelta(days=1), "inst_gone_0001")
    ingest_at(p, WHEN, "inst_stay_0001")
    deleted = delete_install(project=p, install_id="inst_gone_0001")
    assert deleted.counts == {"events": 4, "daily_activity": 2, "period_activity": 2, "installs": 1}
    assert set(Event.objects.values_list("install_id", flat=True)) == {"inst_stay_0001"}
    assert set(DailyActivity.objects.values_list("install_id", flat=True)) == {"inst_stay_0001"}
    assert set(Install.objects.values_list("install_id", flat=True)) == {"inst_stay_0001"}
    assert sum(DailyCount.objects.values_list("events", flat=True)) == 5


def test_same_install_id_in_another_project_is_untouched():
    p, other = make_project().project, make_project().project
    ingest_at(p, WHEN, "inst_same_0001")
    ingest_at(other, WHEN, "inst_same_0001")
    delete_install(project=p, install_id="inst_same_0001")
    assert Event.objects.get().project_id == other.pk
    assert Install.objects.get().project_id == other.pk


def test_unknown_install_is_an_error_and_changes_nothing():
    p = make_project().project
    ingest_at(p, WHEN, "inst_stay_0001")
    with pytest.raises(UnknownInstall):
        delete_install(project=p, install_id="inst_nope_0001")
    assert Event.objects.count() == 1 and Install.objects.count() == 1
