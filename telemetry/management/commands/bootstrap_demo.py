import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from telemetry.models import Project
from telemetry.services.projects import create_project

CREDENTIALS = "demo-credentials.txt"


class Command(BaseCommand):
    help = (
        "For `make run`: create a demo project and an admin login when none exist, "
        "and print them with the URLs (secrets are kept in DATA_DIR/demo-credentials.txt, 0600)."
    )

    def handle(self, *args, **opts) -> None:
        path = settings.DATA_DIR / CREDENTIALS
        lines = []
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            lines += ["admin login:    admin", f"admin password: {password}"]
        if not Project.objects.exists():
            created = create_project(
                slug="demo", name="Demo project", install_rate="60/h", ip_rate="600/h"
            )
            lines += [
                "demo project:   demo (native contract)",
                f"ingest key:     {created.ingest_key}",
                f"operator token: {created.operator_token}",
            ]
        if lines:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write("\n".join(lines) + "\n")
        base = "http://" + os.environ.get("BIND", "127.0.0.1:8000")
        self.stdout.write("")
        if path.exists():
            self.stdout.write(f"Credentials created for this instance ({path}):")
            self.stdout.write(path.read_text())
        self.stdout.write(f"Admin:     {base}/admin/")
        self.stdout.write(f"Dashboard: {base}/dashboard/")
        self.stdout.write(f"API docs:  {base}/api/v1/docs")
        self.stdout.write(
            f"Ingest:    POST {base}/api/v1/events  (Authorization: Bearer <ingest key>)"
        )
        self.stdout.write("")
