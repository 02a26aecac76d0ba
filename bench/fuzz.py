"""The long fuzz run: the CI fuzz tests (schemathesis on the OpenAPI operations, hypothesis on
every front door) with many more cases per target, on the backend the environment names.

    .venv/bin/python bench/fuzz.py [--cases-per-target 500] [--data-dir /tmp/tm-fuzz]

With the default 500: 4 operations x 2 modes x 500 + 6 doors x 500 = 7,000 cases. Run it with
DATABASE_URL / REDIS_URL set for PostgreSQL + Redis. Prints a JSON summary; exits 1 on a failure
(the pytest output above it holds the falsifying example).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/reliability/test_fuzz_api.py", "tests/reliability/test_fuzz_front_doors.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases-per-target", type=int, default=500)
    parser.add_argument("--data-dir", default=None, help="DATA_DIR (default: a fresh temp dir)")
    args = parser.parse_args()
    if args.cases_per_target < 1:
        parser.error("--cases-per-target must be positive")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="tm-fuzz-")
    report = Path(data_dir) / "fuzz-report.jsonl"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DATA_DIR": data_dir,
        "SECRET_KEY": os.environ.get("SECRET_KEY", "fuzz-only"),
        "SECURE_SSL_REDIRECT": "0",
        "TM_FUZZ_CASES": str(args.cases_per_target),
        "TM_FUZZ_REPORT": str(report),
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *TESTS, "-x", "-q"],
        cwd=ROOT,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - started
    targets = (
        [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    )
    summary = {
        "backend": "postgresql" if "postgres" in env.get("DATABASE_URL", "") else "sqlite",
        "cache": "redis" if env.get("REDIS_URL") else "diskcache",
        "cases_per_target": args.cases_per_target,
        "cases": sum(t["cases"] for t in targets),
        "targets": {t["target"]: t["cases"] for t in targets},
        "seconds": round(seconds, 1),
        "cases_per_second": round(sum(t["cases"] for t in targets) / seconds, 1),
        "passed": run.returncode == 0,
    }
    print(json.dumps(summary, indent=2))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
