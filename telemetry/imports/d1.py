"""Opening a Cloudflare D1 database as the importers receive it: the SQLite file a local D1
keeps, or the `.sql` dump `wrangler d1 export` writes, loaded into an in-memory SQLite.
"""

import sqlite3
from pathlib import Path

from telemetry.imports import Malformed

SQLITE_MAGIC = b"SQLite format 3\x00"


def connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to the D1 data in `path`; raises Malformed naming the line of a
    dump statement that does not run."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise Malformed(str(path), exc.strerror or "cannot be read") from None
    if head == SQLITE_MAGIC:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise Malformed(str(path), f"not a readable SQLite database ({exc})") from None
        return conn
    return _load_dump(path)


def _load_dump(path: Path) -> sqlite3.Connection:
    """Run the dump statement by statement, so a failure names the line it starts on."""
    conn = sqlite3.connect(":memory:")
    statement: list[str] = []
    first_line = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not statement:
                    if not line.strip():
                        continue
                    first_line = number
                statement.append(line)
                text = "".join(statement)
                if sqlite3.complete_statement(text):
                    try:
                        try:
                            conn.execute(text)
                        except sqlite3.ProgrammingError:
                            conn.executescript(text)  # several statements on one line
                    except sqlite3.Error as exc:
                        raise Malformed(f"line {first_line}", f"SQL error: {exc}") from None
                    statement = []
    except UnicodeDecodeError:
        raise Malformed(str(path), "neither a SQLite database nor a UTF-8 .sql dump") from None
    except OSError as exc:
        raise Malformed(str(path), exc.strerror or "cannot be read") from None
    if statement and "".join(statement).strip():
        raise Malformed(f"line {first_line}", "SQL statement not terminated")
    return conn


def require(conn: sqlite3.Connection, table: str, columns: list[str]) -> None:
    """Raise Malformed unless `table` exists with every one of `columns`."""
    found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if not found:
        raise Malformed(f"table {table}", "missing")
    missing = [c for c in columns if c not in found]
    if missing:
        raise Malformed(f"table {table}", f"missing column(s) {', '.join(missing)}")


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    return bool(list(conn.execute(f"PRAGMA table_info({table})")))
