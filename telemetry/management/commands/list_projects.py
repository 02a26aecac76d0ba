import datetime as dt
import json

from django.core.management.base import BaseCommand
from django.db.models import Count, Q, Sum
from django.utils import timezone

from telemetry.models import DailyCount, Project


class Command(BaseCommand):
    help = (
        "List projects: slug, contract, retention, live ingest keys and events in the last 7 days."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the list as JSON.")

    def handle(self, *args, **opts) -> None:
        since = timezone.now().date() - dt.timedelta(days=6)
        recent = dict(
            DailyCount.objects.filter(day__gte=since)
            .values("project_id")
            .annotate(n=Sum("events"))
            .values_list("project_id", "n")
        )
        projects = Project.objects.annotate(
            keys=Count("ingest_keys", filter=Q(ingest_keys__revoked_at__isnull=True))
        ).order_by("slug")
        rows = [
            {
                "slug": p.slug,
                "name": p.name,
                "contract": p.contract,
                "retention_days": p.retention_days,
                "ingest_keys": p.keys,
                "events_7d": recent.get(p.pk, 0),
                "created_at": p.created_at.isoformat(),
            }
            for p in projects
        ]
        if opts["json"]:
            self.stdout.write(json.dumps(rows))
            return
        if not rows:
            self.stdout.write("No projects. Create one with `manage.py create_project <slug>`.")
            return
        width = max(len(r["slug"]) for r in rows)
        self.stdout.write(
            f"{'slug':<{width}}  {'contract':<9}  {'retention':>9}  {'keys':>4}"
            f"  {'events 7d':>10}  name"
        )
        for r in rows:
            self.stdout.write(
                f"{r['slug']:<{width}}  {r['contract']:<9}  {r['retention_days']:>8}d"
                f"  {r['ingest_keys']:>4}  {r['events_7d']:>10}  {r['name']}"
            )
