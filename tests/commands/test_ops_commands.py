"""The operator's commands: output, --json, errors with exit code 1 that change nothing."""

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from telemetry.models import DailyActivity, Event, IngestKey, Install, Project, TaskRun
from telemetry.services.schedule import JOBS
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def fails(*args) -> tuple[int, str]:
    """(exit code manage.py would use, message) of a command that must fail."""
    with pytest.raises(CommandError) as exc:
        run(*args)
    return exc.value.returncode, str(exc.value)


def row_counts() -> tuple[int, ...]:
    return (Event.objects.count(), DailyActivity.objects.count(), Install.objects.count())


DAY = dt.timedelta(days=1)


def with_old_and_new_data(retention_days=30):
    p = make_project(retention_days=retention_days).project
    now = timezone.now()
    ingest_at(p, now - dt.timedelta(days=retention_days + 5), "inst_old_00001", n=2)
    # Earlier today, whatever the hour: in the first hour of a UTC day, an hour ago is yesterday
    # (and the stats' DAU 0).
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ingest_at(p, midnight + (now - midnight) / 2, "inst_new_00001")
    return p


# list_projects


def test_list_projects_prints_a_table_and_json():
    make_project(slug="alpha", retention_days=7)
    assert "alpha" in run("list_projects")
    rows = json.loads(run("list_projects", "--json"))
    assert rows[0]["slug"] == "alpha" and rows[0]["retention_days"] == 7
    assert rows[0]["ingest_keys"] == 1


# create_project


def test_create_project_refuses_a_hostname_another_project_serves():
    make_project(slug="alpha", hostnames=["telemetry.example.test"])
    code, message = fails("create_project", "beta", "--hostname", "Telemetry.Example.test")
    assert code == 1 and "already served by project 'alpha'" in message
    code, message = fails("create_project", "beta", "--hostname", "https://x.test/")
    assert code == 1 and "invalid hostname" in message
    assert list(Project.objects.values_list("slug", flat=True)) == ["alpha"]


# rotate_keys


def test_rotate_keys_revokes_old_ingest_keys_and_prints_the_new_one():
    p = make_project(slug="alpha")
    out = json.loads(run("rotate_keys", "alpha", "--ingest", "--json"))
    assert out["ingest_key"] != p.ingest_key and "operator_token" not in out
    assert IngestKey.objects.filter(revoked_at__isnull=True).count() == 1
    assert IngestKey.objects.filter(revoked_at__isnull=False).count() == 1


def test_rotate_keys_replaces_the_operator_token():
    make_project(slug="alpha")
    before = Project.objects.get().operator_token_hash
    out = run("rotate_keys", "alpha", "--operator")
    assert "New operator token:" in out
    assert Project.objects.get().operator_token_hash != before


def test_rotate_keys_needs_a_known_slug_and_something_to_rotate():
    make_project(slug="alpha")
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        run("rotate_keys", "nope", "--ingest")
    with pytest.raises(CommandError, match="nothing to rotate"):
        run("rotate_keys", "alpha")
    assert IngestKey.objects.filter(revoked_at__isnull=False).count() == 0


# purge_events


def test_purge_dry_run_prints_counts_and_changes_nothing():
    p = with_old_and_new_data()
    before = row_counts()
    today = dt.datetime.now(dt.UTC).date()
    out = json.loads(run("purge_events", "--dry-run", "--json"))
    # The cutoff day, worked out here: 30 days of retention before today's UTC date (the run
    # may cross midnight, so the next day is as good).
    cutoffs = {(day - dt.timedelta(days=30)).isoformat() for day in (today, today + DAY)}
    cutoff = out["projects"][0]["cutoff"]
    assert cutoff in cutoffs
    assert out["projects"] == [
        {
            "slug": p.slug,
            "cutoff": cutoff,
            "summaries": 0,
            "events": 2,
            "daily_activity": 1,
            "installs": 1,
            "period_activity": 2,
            "batches": 0,
        }
    ]
    assert row_counts() == before
    assert "would delete 2 events" in run("purge_events", "--dry-run")
    assert f"dated before {cutoff}" in run("purge_events", "--dry-run")


def test_purge_deletes_and_records_a_task_run():
    p = with_old_and_new_data()
    out = run("purge_events", "--project", p.slug, "--batch-size", "1")
    assert f"{p.slug}: deleted 2 events, 1 activity rows, 1 installs" in out
    assert row_counts() == (1, 1, 1)
    task = TaskRun.objects.get()
    assert (task.task, task.ok, task.rows) == ("purge", True, 6)


def test_purge_of_an_unknown_project_exits_1_and_changes_nothing():
    with_old_and_new_data()
    before = row_counts()
    assert fails("purge_events", "--project", "nope")[0] == 1
    assert row_counts() == before


# export_events


def test_export_writes_ndjson_to_a_file(tmp_path):
    p = with_old_and_new_data()
    target = tmp_path / "events.ndjson"
    run("export_events", p.slug, "--format", "ndjson", "--output", str(target))
    lines = target.read_text().splitlines()
    assert [json.loads(line)["install_id"] for line in lines] == [
        "inst_old_00001",
        "inst_old_00001",
        "inst_new_00001",
    ]


def test_export_to_stdout_as_csv_with_since():
    p = with_old_and_new_data()
    since = (timezone.now() - dt.timedelta(days=1)).date().isoformat()
    out = run("export_events", p.slug, "--format", "csv", "--since", since)
    assert out.splitlines()[0].startswith('"event_id","install_id","name"')  # every cell quoted
    assert len(out.splitlines()) == 2


def test_export_rejects_bad_dates_formats_and_unknown_slugs(tmp_path):
    p = with_old_and_new_data()
    code, message = fails("export_events", p.slug, "--format", "csv", "--since", "yesterday")
    assert code == 1 and message.startswith("--since: 'yesterday' is not an ISO date")
    assert fails("export_events", "nope", "--format", "csv")[0] == 1
    assert "invalid choice: 'xml'" in fails("export_events", p.slug, "--format", "xml")[1]
    target = tmp_path / "out.csv"
    assert fails(
        "export_events",
        p.slug,
        "--format",
        "csv",
        "--since",
        "2025-02-01",
        "--until",
        "2025-01-01",
        "--output",
        str(target),
    ) == (1, "--since must be before --until")
    assert not target.exists()


# delete_install


def test_delete_install_prints_what_it_deleted():
    p = with_old_and_new_data()
    out = json.loads(run("delete_install", p.slug, "inst_old_00001", "--json"))
    assert out == {
        "slug": p.slug,
        "install_id": "inst_old_00001",
        "events": 2,
        "daily_activity": 1,
        "period_activity": 2,
        "installs": 1,
    }
    assert row_counts() == (1, 1, 1)


def test_delete_install_of_unknown_install_or_slug_exits_1_and_changes_nothing():
    p = with_old_and_new_data()
    before = row_counts()
    code, message = fails("delete_install", p.slug, "inst_nope_0001")
    assert (code, message) == (
        1,
        f"no install 'inst_nope_0001' in project {p.slug}; nothing deleted",
    )
    assert fails("delete_install", "nope", "inst_old_00001")[0] == 1
    assert row_counts() == before


# telemetry_stats


def test_stats_prints_active_installs_and_a_retention_grid():
    p = with_old_and_new_data()
    out = run("telemetry_stats", p.slug)
    assert "DAU 1   WAU 1   MAU 1" in out
    assert "100%" in out
    data = json.loads(run("telemetry_stats", p.slug, "--json"))
    assert (data["dau"], data["mau"]) == (1, 1)
    assert data["cohorts"][-1]["size"] >= 1


def test_stats_of_unknown_slug_exits_1():
    code, message = fails("telemetry_stats", "nope")
    assert code == 1 and message.startswith("no project with slug 'nope'")


# run_scheduled


@pytest.mark.parametrize("task", sorted(JOBS))
def test_run_scheduled_runs_the_job_now_and_records_it(task):
    with_old_and_new_data()
    out = json.loads(run("run_scheduled", task, "--json"))
    assert out["task"] == task and out["ok"] is True
    assert TaskRun.objects.get().task == task


def test_run_scheduled_purge_really_purges():
    with_old_and_new_data()
    run("run_scheduled", "purge")
    assert row_counts() == (1, 1, 1)


def test_run_scheduled_rejects_unknown_tasks():
    assert "invalid choice: 'backup'" in fails("run_scheduled", "backup")[1]
    assert TaskRun.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_manage_py_exits_1_with_the_message_on_stderr():
    import os
    import subprocess
    import sys

    from django.conf import settings

    from tests.factories import shared_database_url

    make_project(slug="alpha")
    env = {**os.environ, "DATABASE_URL": shared_database_url()}
    done = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "delete_install", "alpha", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no install 'x' in project alpha; nothing deleted" in done.stderr


def test_install_admin_action_deletes_installs_with_their_events(admin_client):
    p = with_old_and_new_data()
    install = Install.objects.get(install_id="inst_old_00001")
    r = admin_client.post(
        "/admin/telemetry/install/",
        {"action": "delete_with_data", "_selected_action": [install.pk]},
        follow=True,
    )
    assert r.status_code == 200
    assert "Deleted 1 installs, 2 events and 1 activity rows." in r.content.decode()
    assert row_counts() == (1, 1, 1)
    assert Event.objects.get().install_id == "inst_new_00001"
    assert p.pk == Install.objects.get().project_id
