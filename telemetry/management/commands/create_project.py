import json

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import Contract
from telemetry.services.projects import create_project


class Command(BaseCommand):
    help = "Create a project; prints its ingest key and operator token once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--contract", default=Contract.NATIVE, choices=Contract.values)
        parser.add_argument("--name")
        parser.add_argument(
            "--hostname",
            action="append",
            dest="hostnames",
            default=[],
            help="Serve this project at the root path for this Host (repeatable).",
        )
        parser.add_argument(
            "--origin",
            action="append",
            dest="origins",
            default=[],
            help="Allowed CORS origin (repeatable).",
        )
        parser.add_argument("--retention-days", type=int)
        parser.add_argument("--install-rate", help="Events per install id, e.g. 10/h.")
        parser.add_argument("--ip-rate", help="Events per client IP, e.g. 100/h.")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, **opts) -> None:
        if opts["retention_days"] is not None and opts["retention_days"] < 1:
            raise CommandError("--retention-days must be at least 1")
        try:
            created = create_project(
                slug=opts["slug"],
                contract=opts["contract"],
                name=opts["name"],
                hostnames=opts["hostnames"],
                retention_days=opts["retention_days"],
                install_rate=opts["install_rate"],
                ip_rate=opts["ip_rate"],
                allowed_origins=opts["origins"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        p = created.project
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "slug": p.slug,
                        "contract": p.contract,
                        "ingest_key": created.ingest_key,
                        "operator_token": created.operator_token,
                    }
                )
            )
            return
        self.stdout.write(
            f"Created project {p.slug} ({p.get_contract_display()}), "
            f"retention {p.retention_days} days, limits {p.install_rate} per install,"
            f" {p.ip_rate} per IP."
        )
        self.stdout.write(f"Ingest key:     {created.ingest_key}")
        self.stdout.write(f"Operator token: {created.operator_token}")
        self.stdout.write("Store both now: only their hashes are kept.")
