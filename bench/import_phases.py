"""Where an import's wall time goes: the import bench's run with a timer around each phase.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tm_bench_import \
        .venv/bin/python bench/import_phases.py --rows 1000000 --source /tmp/src.sqlite

Same source, database and import as bench/import_events.py; each phase function of
telemetry.services.imports and telemetry.ingest.pipeline that exists in the code under test is
wrapped in a wall-clock timer, and the totals are printed after the bench's own lines. Phases
nest (a batch's store includes its COPY), so the rows do not add up to the whole.
"""

import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import import_events as bench  # bench/ is not a package

TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

# (module, function): the phases worth a line, those that exist in the code measured.
PHASES = [
    ("telemetry.services.imports", "_mapped"),  # waiting for a worker's batch
    ("telemetry.services.imports", "_store_staged"),  # one worker batch, in its transaction
    ("telemetry.services.imports", "_flush"),  # one batch mapped here
    ("telemetry.services.imports", "_analyze"),
    ("telemetry.services.imports", "_finish_fresh"),
    ("telemetry.services.imports", "_write_held"),  # held days written (since session 7)
    ("telemetry.services.partitions", "ensure"),
    ("telemetry.ingest.pipeline", "store_staged"),
    ("telemetry.ingest.pipeline", "_run_store"),
    ("telemetry.ingest.pipeline", "fold_rollups"),
    ("telemetry.ingest.pipeline", "hold_fresh"),
    ("telemetry.ingest.pipeline", "attach_fresh"),
    ("telemetry.services.aggregates", "merge_history"),
]


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total = TOTALS[name]
            total[0] += time.perf_counter() - t0
            total[1] += 1

    return wrapper


def instrument() -> None:
    import importlib

    for module_name, fn_name in PHASES:
        module = importlib.import_module(module_name)
        fn = getattr(module, fn_name, None)
        if fn is not None:
            setattr(module, fn_name, timed(f"{module_name.rsplit('.', 1)[1]}.{fn_name}", fn))


def main() -> None:
    import django

    real_setup = django.setup

    def setup(*args, **kwargs):
        real_setup(*args, **kwargs)
        instrument()

    django.setup = setup
    bench.main()
    print("phase (wall time, calls):")
    for name, (seconds, calls) in TOTALS.items():
        print(f"  {name:<32} {seconds:8.2f} s  {calls:6d}")


if __name__ == "__main__":
    main()
