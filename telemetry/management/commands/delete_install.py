import json

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import Project
from telemetry.services.deletion import UnknownInstall, delete_install


class Command(BaseCommand):
    help = (
        "Delete every row of one install (its events, daily activity and install record),"
        " e.g. on a user's request. Anonymous daily totals stay. Prints what was deleted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("install_id")
        parser.add_argument("--json", action="store_true", help="Print the counts as JSON.")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['slug']!r} (see `list_projects`)")
        try:
            deleted = delete_install(project=project, install_id=opts["install_id"])
        except UnknownInstall as exc:
            raise CommandError(f"{exc}; nothing deleted") from None
        c = deleted.counts
        if opts["json"]:
            self.stdout.write(
                json.dumps({"slug": project.slug, "install_id": deleted.install_id, **c})
            )
            return
        self.stdout.write(
            f"Deleted install {deleted.install_id} from {project.slug}: {c['events']} events,"
            f" {c['daily_activity']} activity rows, {c['installs']} install record."
        )
