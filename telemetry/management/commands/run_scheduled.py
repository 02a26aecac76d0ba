import json

from django.core.management.base import BaseCommand, CommandError

from telemetry.services.schedule import JOBS, run_job


class Command(BaseCommand):
    help = (
        "Run one scheduled job now, in this process, and record its TaskRun as beat would: "
        + "; ".join(f"{j.name}: {j.description}" for j in JOBS.values())
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("task", choices=sorted(JOBS))
        parser.add_argument("--json", action="store_true", help="Print the run record as JSON.")

    def handle(self, *args, **opts) -> None:
        try:
            run = run_job(opts["task"])
        except Exception as exc:
            raise CommandError(f"{opts['task']} failed: {type(exc).__name__}: {exc}") from exc
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "task": run.task,
                        "ok": run.ok,
                        "rows": run.rows,
                        "duration_ms": run.duration_ms,
                        "details": run.details,
                    }
                )
            )
            return
        self.stdout.write(
            f"{run.task}: ok, {run.rows} rows in {run.duration_ms} ms"
            + (f" ({run.details['skipped']})" if "skipped" in run.details else "")
        )
