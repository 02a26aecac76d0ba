"""Keep this process's project/key cache honest when projects or keys change here."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from telemetry.ingest.auth import forget_projects
from telemetry.models import IngestKey, Project


@receiver([post_save, post_delete], sender=Project)
@receiver([post_save, post_delete], sender=IngestKey)
def _project_changed(**kwargs) -> None:
    forget_projects()
