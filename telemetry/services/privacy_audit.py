"""The privacy audit: raw IP addresses or secrets in any table or cache entry, and salts kept
past 48 hours (CONTRACTS A4). Read-only; `manage.py privacy_audit` prints its report.

Candidates are found by pattern and then validated with `ipaddress`, so a timestamp such as
10:00:00 or a name such as iad1::abc is never an address. A valid address is excluded only by one
of the rules in EXCLUSION_RULES, and every exclusion is still reported, with table and column.
"""

import datetime as dt
import ipaddress
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.core.cache import caches
from django.db import connection

from telemetry.ingest.privacy import SALT_KEEP_HOURS
from telemetry.models import IpSalt

# Dotted quads not part of a longer dotted or alphanumeric run (1.2.3.4.5 is no address); one
# after a colon is the tail of an IPv6 address (::ffff:192.0.2.1), found by IPV6_RE instead.
IPV4_RE = re.compile(r"(?<![\w:])(?<!\d\.)(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# Colon groups with word boundaries on both sides (so iad1::abc and std::fmt are no candidates),
# optionally ending in a dotted quad (::ffff:203.0.113.9).
IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:.])"
)
# Ingest keys and operator tokens as auth.new_secret makes them: prefix + 43 url-safe characters.
SECRET_RE = re.compile(r"(?<![\w-])(?:tk|op)_[A-Za-z0-9_-]{43}(?![\w-])")

EXCLUSION_RULES = {
    "version-column": "the column holds a client's version string (name ends in 'version')",
    "v-prefixed": "the dotted quad follows a 'v' or 'V', as version strings do (v1.2.3.4)",
}
TEXT_TYPES = {
    "CharField",
    "TextField",
    "JSONField",
    "SlugField",
    "EmailField",
    "GenericIPAddressField",
}


@dataclass
class Finding:
    kind: str  # "ip", "secret", "stale_salt"
    where: str  # "table.column", "cache", "telemetry_ipsalt"
    sample: str  # masked: never print what the audit exists to keep out of logs
    count: int = 1


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)  # {"where", "rule", "sample", "count"}
    tables: int = 0
    values: int = 0
    cache_entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "findings": [asdict(f) for f in self.findings],
            "excluded": self.excluded,
            "tables": self.tables,
            "values": self.values,
            "cache_entries": self.cache_entries,
            "rules": EXCLUSION_RULES,
        }


def mask(value: str) -> str:
    """Enough to find the row, not enough to be the address or the key."""
    if SECRET_RE.fullmatch(value):
        return value[:5] + "…"
    if ":" in value:
        return value.split(":")[0] + ":…"
    return value.split(".")[0] + ".…"


def addresses(text: str, *, column: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    """(addresses found, [(candidate, rule)] excluded by a documented rule) in `text`."""
    found: list[str] = []
    excluded: list[tuple[str, str]] = []
    for match in IPV4_RE.finditer(text):
        candidate = match.group()
        try:
            ipaddress.IPv4Address(candidate)
        except ValueError:
            continue  # 999.1.2.3: not an address, nothing to report
        if column.endswith("version"):
            excluded.append((candidate, "version-column"))
        elif match.start() > 0 and text[match.start() - 1] in "vV":
            excluded.append((candidate, "v-prefixed"))
        else:
            found.append(candidate)
    for match in IPV6_RE.finditer(text):
        candidate = match.group()
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue  # 10:00:00, aa:bb:cc:dd:ee:ff
        found.append(candidate)
    return found, excluded


def audit(*, now: dt.datetime, include_cache: bool = True, progress=None) -> Report:
    """Scan every text column of every table (and the cache); list what breaks the promises."""
    report = Report()
    hits: Counter = Counter()
    samples: dict = {}
    skipped: Counter = Counter()
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in progress(tables) if progress else tables:
            columns = [
                col.name
                for col in connection.introspection.get_table_description(cursor, table)
                if _field_type(col) in TEXT_TYPES
            ]
            report.tables += 1
            if not columns:
                continue
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {connection.ops.quote_name(table)}")
            while rows := cursor.fetchmany(2000):
                for row in rows:
                    for column, value in zip(columns, row, strict=True):
                        if value is None:
                            continue
                        report.values += 1
                        _scan(str(value), f"{table}.{column}", column, hits, samples, skipped)
    if include_cache:
        for key, value in _cache_entries():
            report.cache_entries += 1
            _scan(key + " " + value, "cache", "", hits, samples, skipped)
    for (kind, where), count in sorted(hits.items()):
        report.findings.append(Finding(kind, where, mask(samples[(kind, where)]), count))
    for (where, rule, sample), count in sorted(skipped.items()):
        report.excluded.append({"where": where, "rule": rule, "sample": sample, "count": count})
    limit = now - dt.timedelta(hours=SALT_KEEP_HOURS)
    stale = [
        day
        for day in IpSalt.objects.filter(day__lte=limit.date()).values_list("day", flat=True)
        if dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC) < limit
    ]
    if stale:
        report.findings.append(
            Finding("stale_salt", "telemetry_ipsalt", f"oldest {min(stale)}", len(stale))
        )
    return report


def _field_type(col) -> str:
    try:
        return connection.introspection.get_field_type(col.type_code, col)
    except KeyError:
        return ""


def _scan(text, where, column, hits, samples, skipped) -> None:
    found, excluded = addresses(text, column=column)
    for candidate in found:
        hits[("ip", where)] += 1
        samples.setdefault(("ip", where), candidate)
    for candidate, rule in excluded:
        skipped[(where, rule, mask(candidate))] += 1
    for match in SECRET_RE.finditer(text):
        hits[("secret", where)] += 1
        samples.setdefault(("secret", where), match.group())


def _cache_entries():
    """(key, value) of every entry of the rate-limit cache, as text."""
    cache = caches[settings.RATELIMIT_USE_CACHE]
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        redis = client.get_client(write=False)
        prefix = settings.CACHES[settings.RATELIMIT_USE_CACHE].get("KEY_PREFIX", "")
        pattern = f"{prefix}:*" if prefix else "*"
        for key in redis.scan_iter(match=pattern, count=1000):
            value = redis.get(key) if redis.type(key) == b"string" else b""
            yield key.decode("latin-1"), (value or b"").decode("latin-1")
        return
    inner = getattr(cache, "_cache", None)
    for shard in getattr(inner, "_shards", []):
        for key in shard.iterkeys():
            yield str(key), repr(shard.get(key))
