"""The one setting each contract's client changes to send here, declared once.

The admin's project page, the dashboard's setup page and the README's client sections all
render this table (tests/contracts/test_clients.py checks the README; `python
scripts/sync_readme.py` rewrites its blocks), so the three cannot drift.
"""

import re
import textwrap
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

from telemetry.models import Contract, Project


@dataclass(frozen=True)
class OneSetting:
    """How one contract's client switches over. `lines` and `note` are templates: `{base}` is
    the project's front door (its hostname's root, or `<server>/p/<slug>`)."""

    contract: str
    client: str
    setting: str
    lines: tuple[str, ...]
    note: str
    example_slug: str  # the slug the README's section creates
    lang: str = "bash"


ONE_SETTING: dict[str, OneSetting] = {
    s.contract: s
    for s in (
        OneSetting(
            contract=Contract.VOICEMODE,
            client="VoiceMode",
            setting="VOICEMODE_TELEMETRY_ENDPOINT",
            lines=("voicemode config set VOICEMODE_TELEMETRY_ENDPOINT {base}/telemetry",),
            note="Or put `VOICEMODE_TELEMETRY_ENDPOINT={base}/telemetry` in"
            " `~/.voicemode/voicemode.env`. Telemetry stays opt-in (`VOICEMODE_TELEMETRY=true`).",
            example_slug="voicemode",
        ),
        OneSetting(
            contract=Contract.DOMSCRIBE,
            client="Domscribe relay",
            setting="the relay's telemetry endpoint URL",
            lines=("{base}/v1/session",),
            note="It replaces `https://telemetry.domscribe.dev/v1/session`; with that hostname"
            " pointed here and given to the project, the URL does not change at all. The"
            " operator token replaces the worker's `WAU_READ_TOKEN`.",
            example_slug="domscribe",
            lang="",
        ),
        OneSetting(
            contract=Contract.BAOFENG,
            client="Baofeng flasher web app",
            setting="VITE_TELEMETRY_BASE_URL",
            lines=(
                "VITE_TELEMETRY_BASE_URL={base}",
                "# Older builds that only know the legacy error path:",
                "VITE_LOG_INGEST_URL={base}/client-log",
            ),
            note="In `web/.env` or the build environment. `scripts/recent.mjs` works with"
            " `LOG_WORKER_BASE_URL={base}` and `ADMIN_TOKEN=<operator token>`.",
            example_slug="baofeng",
        ),
        OneSetting(
            contract=Contract.PRYX,
            client="Pryx runtime",
            setting="PRYX_CLOUD_API_URL",
            lines=("export PRYX_CLOUD_API_URL={base}/api   # or cloud_api_url in the config",),
            note="The runtime then posts its log batches to `{base}/api/v1/logs`. A Bearer token"
            " it sends (keychain `cloud_access_token`) must be the project's ingest key.",
            example_slug="pryx",
        ),
        OneSetting(
            contract=Contract.AXIOM,
            client="Axiom-style sender (WorldMonitor's gateway)",
            setting="the Axiom dataset ingest URL",
            lines=(
                "https://api.axiom.co/v1/datasets/wm_api_usage/ingest",
                "→ {base}/v1/datasets/wm_api_usage/ingest",
                "AXIOM_API_TOKEN=<the project's ingest key>",
            ),
            note="Any dataset name works: it is kept in each event's properties. For"
            " WorldMonitor, change the constant in `server/_shared/usage.ts`.",
            example_slug="wm-usage",
            lang="",
        ),
        OneSetting(
            contract=Contract.NATIVE,
            client="Your own client (native API)",
            setting="the events URL",
            lines=(
                "curl -X POST {base}/api/v1/events \\",
                "  -H \"Authorization: Bearer $INGEST_KEY\" -H 'Content-Type: application/json' \\",
                '  -d \'{{"install_id":"inst_0001abcd","name":"app.start",'
                '"timestamp":"\'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"\'"}}\'',
            ),
            note="`$INGEST_KEY` is the project's ingest key. `{server}/api/v1/events` takes the"
            " same request: the key names the project.",
            example_slug="mytool",
        ),
    )
}

README_SERVER = "http://127.0.0.1:8000"
BLOCK_RE = re.compile(r"<!-- one-setting: (?P<contract>[a-z]+) -->\n.*?<!-- /one-setting -->", re.S)


def server_url(*, request=None, configured: str = "") -> str:
    """This server's URL without a trailing slash: the configured public URL, else the one the
    page was requested at."""
    if configured:
        return configured.rstrip("/")
    return request.build_absolute_uri("/").rstrip("/")


def bases(*, project: Project, server: str) -> list[str]:
    """The project's front-door base URLs, the one to use first: each hostname's root (same
    scheme as the server), then `<server>/p/<slug>`."""
    scheme = urlsplit(server).scheme or "https"
    return [f"{scheme}://{h}" for h in project.hostnames or []] + [f"{server}/p/{project.slug}"]


def render(*, contract: str, base: str, server: str) -> dict:
    """The table's entry for `contract`, filled in: {"client", "setting", "lines", "note"}."""
    entry = ONE_SETTING[contract]
    fill = {"base": base, "server": server}
    return {
        "client": entry.client,
        "setting": entry.setting,
        "lines": [line.format(**fill) for line in entry.lines],
        "text": "\n".join(line.format(**fill) for line in entry.lines),
        "note": entry.note.format(**fill),
    }


def note_html(note: str) -> SafeString:
    """The note's Markdown code spans (`x`) as <code>, everything else escaped."""
    parts = note.split("`")
    return mark_safe(  # noqa: S308 - every part is escaped here
        "".join(
            f"<code>{conditional_escape(p)}</code>" if i % 2 else str(conditional_escape(p))
            for i, p in enumerate(parts)
        )
    )


def for_project(*, project: Project, server: str) -> dict:
    """What the admin and the dashboard show: the setting at the project's first base URL, and
    the other URLs it is reachable at."""
    urls = bases(project=project, server=server)
    shown = render(contract=project.contract, base=urls[0], server=server)
    return {**shown, "note_html": note_html(shown["note"]), "also": urls[1:]}


def readme_block(contract: str) -> str:
    """The README's generated block for `contract` (markers included)."""
    entry = ONE_SETTING[contract]
    shown = render(
        contract=contract,
        base=f"{README_SERVER}/p/{entry.example_slug}",
        server=README_SERVER,
    )
    note = textwrap.fill(shown["note"], width=100, break_long_words=False, break_on_hyphens=False)
    return (
        f"<!-- one-setting: {contract} -->\n"
        f"```{entry.lang}\n{shown['text']}\n```\n\n{note}\n"
        "<!-- /one-setting -->"
    )


def sync_readme(text: str) -> str:
    """`text` with every one-setting block replaced by the table's version."""
    return BLOCK_RE.sub(lambda m: readme_block(m["contract"]), text)
