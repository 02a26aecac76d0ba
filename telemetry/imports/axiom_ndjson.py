"""An Axiom dataset export (one event per line, CONTRACTS B4) as events, mapped by the Axiom
front door's own `event_from_item`; Axiom's `_sysTime` becomes the arrival time.

The dataset is the export's file name unless given (--dataset), as the URL named it live.
"""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from telemetry.contracts import axiom
from telemetry.imports import Item, Malformed, Source, count_lines, json_lines, parse_moment
from telemetry.ingest.schema import InvalidEvent
from telemetry.models import Project

# Fields Axiom adds on its side (a sender never sent them), and the raw client address a later
# WorldMonitor gateway logged (PR #3645): no address, hashed or not, is ever imported.
DROPPED = ("_sysTime", "_rowId", "ip")


def read(
    path: Path, *, project: Project, now: dt.datetime, dataset: str | None = None, **_options
) -> Source:
    if not path.is_file():
        raise Malformed(str(path), "no such file")
    dataset = dataset or path.name.split(".")[0]
    if not axiom.DATASET_RE.fullmatch(dataset):
        raise Malformed("--dataset", axiom.INVALID_DATASET)
    return Source(total=count_lines(path), items=_items(path, project, dataset, now))


def _items(path: Path, project: Project, dataset: str, now: dt.datetime) -> Iterator[Item]:
    for number, record in json_lines(path):
        yield item(f"line {number}", record, project=project, dataset=dataset, now=now)


def item(where: str, record, *, project: Project, dataset: str, now: dt.datetime) -> Item:
    received = None
    if isinstance(record, dict):
        received = parse_moment(record.get("_sysTime"))
        record = {k: v for k, v in record.items() if k not in DROPPED}
    try:
        event = axiom.event_from_item(
            record, project=project, dataset=dataset, now=now, history=True
        )
    except InvalidEvent as exc:
        return Item(where, error=str(exc))
    return Item(where, event=event, received_at=received)
