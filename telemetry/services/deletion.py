"""Deleting one install on request: every event, activity rollup and the install row itself.

DailyCount and the summaries are anonymous totals and stay.
"""

from dataclasses import dataclass, field

from django.db import connection, transaction

from telemetry.ingest import rollups
from telemetry.models import DailyActivity, Event, Install, PeriodActivity, Project
from telemetry.services.cohorts import invalidate as invalidate_cohorts
from telemetry.services.error_days import error_days_of_install, forget_days
from telemetry.services.rolling import forget_install

BATCH_SIZE = 5_000


class UnknownInstall(LookupError):
    """No install row and no event carries this id in the project."""


@dataclass
class Deleted:
    install_id: str
    counts: dict[str, int] = field(default_factory=dict)


def _delete_events(project: Project, install_id: str) -> int:
    total = 0
    while True:
        # Batches through the (project, install_id, timestamp) index keep each lock short.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM telemetry_event WHERE id IN (SELECT id FROM telemetry_event"
                " WHERE project_id = %s AND install_id = %s LIMIT %s)",
                [project.pk, install_id, BATCH_SIZE],
            )
            n = cursor.rowcount
        total += n
        if n < BATCH_SIZE:
            return total


def delete_install(*, project: Project, install_id: str) -> Deleted:
    """Remove every row of one install; UnknownInstall (and nothing changed) if there are none."""
    if not install_id or not (
        Install.objects.filter(project=project, install_id=install_id).exists()
        or Event.objects.filter(project=project, install_id=install_id).exists()
        or DailyActivity.objects.filter(project=project, install_id=install_id).exists()
    ):
        raise UnknownInstall(f"no install {install_id!r} in project {project.slug}")
    # Fold what is queued, so no queued row brings the install's activity back afterwards.
    rollups.fold_rollups()
    deleted = Deleted(install_id=install_id)
    error_days = error_days_of_install(project=project, install_id=install_id)
    deleted.counts["events"] = _delete_events(project, install_id)
    with transaction.atomic():
        deleted.counts["daily_activity"], _ = DailyActivity.objects.filter(
            project=project, install_id=install_id
        ).delete()
        deleted.counts["period_activity"], _ = PeriodActivity.objects.filter(
            project=project, install_id=install_id
        ).delete()
        deleted.counts["installs"], _ = Install.objects.filter(
            project=project, install_id=install_id
        ).delete()
        # The retention cells counted this install; they are recounted on the next refresh.
        invalidate_cohorts(project=project)
        forget_install(project=project, install_id=install_id)
        # Error groups of its days name it among their installs: recounted without it.
        forget_days(project=project, days=error_days)
    return deleted
