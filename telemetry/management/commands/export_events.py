import datetime as dt
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from telemetry.models import Project
from telemetry.services.exports import FORMATS, export_events, export_queryset


def _moment(value: str, option: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option}: {value!r} is not an ISO date or date-time (e.g. 2025-01-31)"
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


class Command(BaseCommand):
    help = (
        "Export a project's raw events as CSV or NDJSON, oldest first, streamed in constant"
        " memory. --since/--until bound the server receive time (UTC unless an offset is given;"
        " --until is exclusive). No IP hash is exported."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
        parser.add_argument("--since", help="Received at or after (ISO date or date-time).")
        parser.add_argument("--until", help="Received before (ISO date or date-time).")
        parser.add_argument("--output", metavar="FILE", help="Write here instead of stdout.")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['slug']!r} (see `list_projects`)")
        since = _moment(opts["since"], "--since") if opts["since"] else None
        until = _moment(opts["until"], "--until") if opts["until"] else None
        if since and until and since >= until:
            raise CommandError("--since must be before --until")
        total = export_queryset(project=project, since=since, until=until).count()
        try:
            out = (
                open(opts["output"], "w", newline="", encoding="utf-8")  # noqa: SIM115
                if opts["output"]
                else self.stdout
            )
        except OSError as exc:
            raise CommandError(f"cannot write {opts['output']}: {exc.strerror}") from None
        try:
            with tqdm(
                total=total, unit="event", desc="export", disable=None, file=sys.stderr
            ) as bar:
                n = export_events(
                    project=project,
                    out=out,
                    fmt=opts["fmt"],
                    since=since,
                    until=until,
                    progress=bar.update,
                )
        finally:
            if opts["output"]:
                out.close()
        if opts["output"]:
            self.stderr.write(f"Exported {n} events to {opts['output']}.")
