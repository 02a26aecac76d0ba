import json
import sys

from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from telemetry.services.privacy_audit import EXCLUSION_RULES, audit


class Command(BaseCommand):
    help = (
        "Scan every table's text columns and the rate-limit cache for raw IP addresses (v4 and"
        " v6) and ingest keys or operator tokens, and list IP salts kept past 48 hours. Exits 1"
        " when anything is found."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--no-cache", action="store_true", help="Scan the database only.")

    def handle(self, *args, **opts) -> None:
        def progress(tables):
            return tqdm(tables, desc="tables", disable=opts["json"] or not sys.stderr.isatty())

        report = audit(now=timezone.now(), include_cache=not opts["no_cache"], progress=progress)
        if opts["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(
                f"scanned {report.tables} tables, {report.values} values,"
                f" {report.cache_entries} cache entries"
            )
            for f in report.findings:
                self.stdout.write(f"FOUND {f.kind} in {f.where}: {f.count} (e.g. {f.sample})")
            for x in report.excluded:
                self.stdout.write(
                    f"excluded {x['count']} in {x['where']} ({x['sample']}):"
                    f" {EXCLUSION_RULES[x['rule']]}"
                )
            self.stdout.write("ok: nothing found" if report.ok else "privacy audit FAILED")
        if not report.ok:
            sys.exit(1)
