from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _ensure_schedule(using: str = "default", **kwargs) -> None:
    # After every migrate: add the default beat rows that are missing, never touch edited ones.
    if "django_celery_beat_periodictask" not in connections[using].introspection.table_names():
        return
    from telemetry.services.schedule import ensure_default_schedule

    ensure_default_schedule(using=using)


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry import checks, signals  # noqa: F401

        post_migrate.connect(_ensure_schedule, sender=self)
