"""The Celery application; tasks live in telemetry/tasks.py, the schedule in the database."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("telemetry_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
