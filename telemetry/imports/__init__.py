"""Readers of the stores the platform replaces: one module per source format, each turning its
rows into the IncomingEvents the source's front door would have made (the door's own code).

A reader yields Items in file order and raises Malformed for a file it cannot read on; storing,
dedupe and the retention split are telemetry.services.imports' job.
"""

import datetime as dt
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Project

# format → module in this package
FORMATS = {
    "voicemode-d1": "voicemode_d1",
    "baofeng-d1": "baofeng_d1",
    "domscribe-kv": "domscribe_kv",
    "axiom-ndjson": "axiom_ndjson",
    "native-ndjson": "native",
    "native-csv": "native",
}


class Malformed(Exception):
    """The file cannot be read on from `where` (a line or row); nothing after it is read."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(slots=True)
class Item:
    """One source row: the event it becomes, or the error its front door would answer."""

    where: str  # "line 12", "events row 3", … for reports
    event: IncomingEvent | None = None
    error: str = ""
    received_at: dt.datetime | None = None  # the source's arrival time, kept on the event


@dataclass(slots=True)
class Source:
    total: int | None  # rows to read, for the progress bar (None: unknown)
    items: Iterator[Item]
    # A reader may also offer its raw rows (picklable tuples, the same ones `items` maps) and
    # the function mapping one to its Item, so the import can map them in worker processes.
    # Its events must carry ids (their dedupe key): id-less ones need a look-up per batch.
    rows: Iterator[tuple] | None = None
    map_row: Callable[[tuple], Item] | None = None


def open_source(
    fmt: str, path: Path, *, project: Project, now: dt.datetime, dataset: str | None = None
) -> Source:
    """The reader of `fmt` over `path`; raises Malformed when the file cannot be opened."""
    module = importlib.import_module(f"{__name__}.{FORMATS[fmt]}")
    return module.read(path, project=project, now=now, fmt=fmt, dataset=dataset)


def parse_moment(value: object) -> dt.datetime | None:
    """A stored ISO time (no offset = UTC) as aware UTC, or None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def from_ms(value: object) -> dt.datetime | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def count_lines(path: Path) -> int | None:
    """Non-empty lines in `path`, for the progress bar; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, value) of each non-empty line; raises Malformed naming the first line
    that is not JSON."""
    from telemetry.http import parse_json

    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = parse_json(line.strip())
                except ValueError as exc:
                    raise Malformed(f"line {number}", f"not JSON ({_json_error(exc)})") from None
                yield number, value
    except OSError as exc:
        raise Malformed(str(path), exc.strerror or "cannot be read") from None


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc)
