"""The platform's own exports (`export_events --format ndjson|csv`) as events, mapped by the
native API's `event_from_native`, arrival times kept: export → import round-trips exactly.
"""

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from telemetry.csvcells import FORMULA_START
from telemetry.http import parse_json
from telemetry.imports import Item, Malformed, Source, count_lines, json_lines, parse_moment
from telemetry.ingest.schema import InvalidEvent, event_from_native
from telemetry.models import Project
from telemetry.services.exports import FIELDS


def read(path: Path, *, project: Project, now: dt.datetime, fmt: str, **_options) -> Source:
    if not path.is_file():
        raise Malformed(str(path), "no such file")
    total = count_lines(path)
    if fmt == "native-csv":
        return Source(total=max(0, (total or 1) - 1), items=_csv_items(path, project, now))
    return Source(total=total, items=_ndjson_items(path, project, now))


def _ndjson_items(path: Path, project: Project, now: dt.datetime) -> Iterator[Item]:
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise Malformed(f"line {number}", "expected one exported event object per line")
        yield item(f"line {number}", record, project=project, now=now)


def _csv_items(path: Path, project: Project, now: dt.datetime) -> Iterator[Item]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != FIELDS:
                raise Malformed("line 1", f"expected the export header {','.join(FIELDS)}")
            for cells in reader:
                where = f"line {reader.line_num}"
                if len(cells) != len(FIELDS):
                    raise Malformed(where, f"expected {len(FIELDS)} cells, found {len(cells)}")
                record = dict(zip(FIELDS, (_unescape(c) for c in cells), strict=True))
                try:
                    # As the ndjson lines and the API read JSON: NaN and 1e400 are not JSON.
                    record["properties"] = parse_json(record["properties"] or "{}")
                except ValueError:
                    raise Malformed(where, "properties is not JSON") from None
                yield item(where, record, project=project, now=now)
    except csv.Error as exc:
        raise Malformed(f"line {reader.line_num}", f"not CSV ({exc})") from None
    except UnicodeDecodeError:
        raise Malformed(str(path), "not UTF-8") from None


def _unescape(cell: str) -> str:
    """Undo csvcells.safe_cell: the quote put before a formula-like cell."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_START):
        return cell[1:]
    return cell


def item(where: str, record: dict, *, project: Project, now: dt.datetime) -> Item:
    received = parse_moment(record.get("received_at"))
    fields = {k: v for k, v in record.items() if k != "received_at" and v not in (None, "")}
    try:
        event = event_from_native(fields, project=project, now=now, history=True)
    except InvalidEvent as exc:
        return Item(where, error=str(exc))
    return Item(where, event=event, received_at=received)
