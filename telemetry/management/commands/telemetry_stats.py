import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from telemetry.models import Project
from telemetry.services.stats import active_installs, cohorts, week_start


class Command(BaseCommand):
    help = (
        "Active installs (DAU/WAU/MAU, UTC days) and a weekly retention grid: each row a cohort"
        " of installs first seen that week, each column the share still active k weeks later."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--weeks", type=int, default=6, help="Cohorts to show (default 6).")
        parser.add_argument("--json", action="store_true", help="Print the numbers as JSON.")

    def handle(self, *args, **opts) -> None:
        if not 1 <= opts["weeks"] <= 52:
            raise CommandError("--weeks must be between 1 and 52")
        project = Project.objects.filter(slug=opts["slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['slug']!r} (see `list_projects`)")
        now = timezone.now()
        active = active_installs(project=project, now=now)
        last = week_start(now.date())
        first = last - timezone.timedelta(weeks=opts["weeks"] - 1)
        grid = cohorts(project=project, first_week=first, last_week=last, now=now)
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "slug": project.slug,
                        "dau": active.dau,
                        "wau": active.wau,
                        "mau": active.mau,
                        "cohorts": [
                            {
                                "week_start": c.week_start.isoformat(),
                                "size": c.size,
                                "retained": c.retained,
                            }
                            for c in grid
                        ],
                    }
                )
            )
            return
        self.stdout.write(f"{project.name} ({project.slug})")
        self.stdout.write(f"DAU {active.dau}   WAU {active.wau}   MAU {active.mau}")
        self.stdout.write("")
        if not grid:
            self.stdout.write(f"No new installs in the last {opts['weeks']} weeks.")
            return
        width = max(len(c.retained) for c in grid)
        self.stdout.write(
            "cohort      installs " + "".join(f"{'wk ' + str(k):>7}" for k in range(width))
        )
        for c in grid:
            cells = "".join(f"{(100 * n / c.size if c.size else 0):>6.0f}%" for n in c.retained)
            self.stdout.write(f"{c.week_start}  {c.size:>8} {cells}")
