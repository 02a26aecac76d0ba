"""The least Python work an import of VoiceMode rows does: each row mapped by the front door's
own code (telemetry.imports.voicemode_d1.row_item) and encoded for COPY, in one process, with
no database. With bench/import_floor.py (the least PostgreSQL work) it sets issue 14's 50,000
rows/s (40 µs of CPU a row on two cores) against what this machine can do.

    .venv/bin/python bench/import_mapping.py [--rows 100000] [--source /tmp/src.sqlite]

Reads `--rows` rows of the import bench's source (bench/import_events.py writes it if missing)
and times, per row, on this process's CPU clock, over `--rounds` rounds (the least is kept):
- `read`: the reader's rows out of SQLite, in its order;
- `map`: the reader's mapping alone (parse the JSON columns, the front door's checks);
- `worker`: what an import worker does to a batch (`_map_batch`: map, split by retention,
  drop repeats, encode the COPY rows by day).
Prints one JSON line.
"""

import argparse
import datetime as dt
import itertools
import json
import time
from pathlib import Path

# Run as a script, bench/ is on the path; import_events puts the project there too and sets
# the environment for its own Django set-up, which this one shares.
from import_events import write_source

BATCH = 20_000  # telemetry.services.imports.BATCH_SIZE


def per_row(fn, rows: int, rounds: int) -> float:
    """The least CPU µs a row of `fn()` over `rounds` runs."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return round(best / rows * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", type=Path, default=Path("/tmp/tm-bench-import-1000000.sqlite"))
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    write_source(args.source, 1_000_000, now)

    import django

    django.setup()
    from telemetry.imports import open_source
    from telemetry.models import Project
    from telemetry.services import imports

    # Unsaved: mapping and encoding need the project's settings and key, not its row.
    project = Project(pk=1, slug="bench-import", contract="voicemode", retention_days=90)

    def source():
        return open_source("voicemode-d1", args.source, project=project, now=now)

    rows = list(itertools.islice(source().rows, args.rows))
    map_row = source().map_row
    imports._WORK.update(
        map_row=map_row, project=project, now=now, oldest_kept=now - dt.timedelta(days=90)
    )
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]

    def read():
        for _ in itertools.islice(source().rows, args.rows):
            pass

    def mapping():
        for row in rows:
            map_row(row)

    def worker():
        for batch in batches:
            imports._map_batch(batch)

    result = {
        "rows": len(rows),
        "read_us": per_row(read, len(rows), args.rounds),
        "map_us": per_row(mapping, len(rows), args.rounds),
        "worker_us": per_row(worker, len(rows), args.rounds),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
