import json

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import Project
from telemetry.services.projects import rotate_ingest_key, rotate_operator_token


class Command(BaseCommand):
    help = (
        "Rotate a project's secrets: --ingest revokes every ingest key and issues one new key,"
        " --operator replaces the operator token. New secrets are printed once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--ingest", action="store_true", help="Rotate the ingest key.")
        parser.add_argument("--operator", action="store_true", help="Rotate the operator token.")
        parser.add_argument("--json", action="store_true", help="Print the new secrets as JSON.")

    def handle(self, *args, **opts) -> None:
        if not (opts["ingest"] or opts["operator"]):
            raise CommandError("nothing to rotate: pass --ingest, --operator or both")
        project = Project.objects.filter(slug=opts["slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['slug']!r} (see `list_projects`)")
        secrets = {}
        if opts["ingest"]:
            secrets["ingest_key"] = rotate_ingest_key(project=project)
        if opts["operator"]:
            secrets["operator_token"] = rotate_operator_token(project=project)
        if opts["json"]:
            self.stdout.write(json.dumps({"slug": project.slug, **secrets}))
            return
        if "ingest_key" in secrets:
            self.stdout.write(f"New ingest key:     {secrets['ingest_key']} (old keys revoked)")
        if "operator_token" in secrets:
            self.stdout.write(f"New operator token: {secrets['operator_token']}")
        self.stdout.write("Store them now: only their hashes are kept.")
