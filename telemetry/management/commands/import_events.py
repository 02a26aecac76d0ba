import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from telemetry.imports import FORMATS
from telemetry.models import Project
from telemetry.services.imports import (
    MAX_WORKERS,
    PARALLEL_MIN_ROWS,
    ImportFailed,
    ImportReport,
    import_events,
)


class Command(BaseCommand):
    help = (
        "Import a project's history from the system it replaces (a VoiceMode or Baofeng D1"
        " database or `wrangler d1 export` dump, Domscribe KV records, an Axiom export) or from"
        " this platform's own export. Rows inside the project's retention become events through"
        " the front door's own mapping; older rows are kept only as anonymous daily aggregates."
        " No IP hash is imported. Safe to run twice: stored rows are recognised as duplicates."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--format", required=True, choices=list(FORMATS), dest="fmt")
        parser.add_argument("path", help="The D1 database file or .sql dump, or the export.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Read and validate only; write nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument(
            "--dataset", help="axiom-ndjson: the dataset name (default: the file's name)."
        )
        parser.add_argument(
            "--workers",
            type=int,
            help="Processes mapping rows on PostgreSQL (voicemode-d1; default: one per core, up"
            f" to {MAX_WORKERS}, from {PARALLEL_MIN_ROWS:,} rows on); 1 maps in this process.",
        )

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["slug"]).first()
        if project is None:
            raise CommandError(f"no project with slug {opts['slug']!r} (see `list_projects`)")
        if opts["workers"] is not None and not 1 <= opts["workers"] <= MAX_WORKERS:
            raise CommandError(f"--workers must be 1 to {MAX_WORKERS}")
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        with tqdm(unit="row", desc="import", disable=None, file=sys.stderr) as bar:
            try:
                report = import_events(
                    project=project,
                    fmt=opts["fmt"],
                    path=path,
                    now=timezone.now(),
                    dry_run=opts["dry_run"],
                    dataset=opts["dataset"],
                    workers=opts["workers"],
                    progress=bar.update,
                    on_total=lambda total: setattr(bar, "total", total),
                )
            except ImportFailed as exc:
                raise CommandError(_failure(path, exc)) from None
        if opts["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(_summary(report, path))


def _failure(path: Path, exc: ImportFailed) -> str:
    r = exc.report
    first, last = r.committed_rows + 1, r.rows
    in_progress = f"row {first}" if first == last else f"rows {first}-{last}"
    if r.committed_rows:
        done = (
            f"Stopped there: the first {r.committed_rows} rows are imported ({r.stored} events"
            f" stored, {r.duplicates} already there); the batch in progress ({in_progress}) was"
            " rolled back and no aggregates were written."
        )
    else:
        done = "Nothing was imported."
    if r.dry_run:
        done = "Dry run: nothing was written."
    return (
        f"{path}: {exc.error.where}: {exc.error.message}. {done} Fix the file and run again:"
        " rows already stored are recognised as duplicates."
    )


def _summary(r: ImportReport, path: Path) -> str:
    verb = "would be" if r.dry_run else "were"
    lines = [
        f"{'Dry run: ' if r.dry_run else ''}{r.format} from {path} into {r.project}",
        f"  rows read:   {r.rows}",
        f"  new events:  {r.stored} ({verb} stored)",
        f"  duplicates:  {r.duplicates} (already stored)",
        f"  refused:     {r.refused}",
        f"  aggregated:  {r.aggregated} rows before {r.cutoff} over {r.aggregated_days} days"
        " (older than retention: daily totals only)",
    ]
    for refusal in r.refusals[:20]:
        lines.append(f"  refused {refusal['row']}: {refusal['error']}")
    if r.refused > 20:
        lines.append(f"  … {r.refused - 20} more refusals (--json lists up to 1000)")
    if r.dry_run:
        lines.append("Nothing was written.")
    return "\n".join(lines)
