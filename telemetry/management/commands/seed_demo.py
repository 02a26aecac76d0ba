"""seed_demo: fill a project with realistic demo usage and the matching rollups."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from telemetry.models import Project
from telemetry.services.demo import seed_demo
from telemetry.services.projects import create_project


class Command(BaseCommand):
    help = (
        "Generate demo events (growth, churn, weekly rhythm, versions, OS mix, errors) for a "
        "project, with exactly the rollups ingest would keep. Creates the project if missing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--installs", type=int, default=1000)
        parser.add_argument("--events", type=int, default=100_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--replace", action="store_true", help="delete the project's data first"
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, slug, installs, events, days, seed, replace, **options) -> None:
        project = Project.objects.filter(slug=slug).first()
        created = None
        if project is None:
            try:
                created = create_project(slug=slug, name=f"{slug} (demo)", retention_days=days)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            project = created.project
        if days > project.retention_days:
            raise CommandError(
                f"--days {days} exceeds the project's retention ({project.retention_days} days)"
            )
        bar = tqdm(total=events, unit="ev", disable=options["json"], desc=slug)
        try:
            result = seed_demo(
                project=project,
                installs=installs,
                events=events,
                days=days,
                seed=seed,
                now=timezone.now(),
                replace=replace,
                progress=bar.update,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        out = {
            "project": project.slug,
            "installs": result.installs,
            "events": result.events,
            "activity_rows": result.activity_rows,
            "days": result.days,
        }
        if created is not None:
            out["ingest_key"] = created.ingest_key
            out["operator_token"] = created.operator_token
        if options["json"]:
            self.stdout.write(json.dumps(out))
        else:
            self.stdout.write(", ".join(f"{k}: {v}" for k, v in out.items()))
