"""Celery tasks: thin wrappers that run a scheduled job and record its TaskRun.

Every job is idempotent (safe to retry or to run twice), which is why acks_late is on.
"""

from celery import shared_task

from telemetry.ingest import rollups
from telemetry.services.schedule import run_job


@shared_task(name="telemetry.tasks.purge_expired")
def purge_expired() -> int:
    return run_job("purge").rows


@shared_task(name="telemetry.tasks.rotate_salts")
def rotate_salts() -> int:
    return run_job("rotate_salts").rows


@shared_task(name="telemetry.tasks.refresh_aggregates")
def refresh_aggregates() -> int:
    return run_job("refresh_aggregates").rows


@shared_task(name="telemetry.tasks.create_partitions")
def create_partitions() -> int:
    return run_job("create_partitions").rows


@shared_task(name="telemetry.tasks.analyze_events")
def analyze_events() -> int:
    return run_job("analyze_events").rows


@shared_task(name="telemetry.tasks.refresh_cohorts")
def refresh_cohorts() -> int:
    return run_job("refresh_cohorts").rows


@shared_task(name="telemetry.tasks.fold_rollups", expires=30)
def fold_rollups() -> int:
    # Every 10 s, so not recorded as a TaskRun (8,640 rows a day); the recorded
    # refresh_cohorts run folds too, once a minute. expires: a backlog is one fold, not many.
    return rollups.fold_rollups()
