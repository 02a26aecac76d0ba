"""The one-setting table: every contract has an entry, and the README shows exactly it."""

from pathlib import Path

from telemetry.contracts import clients
from telemetry.models import Contract, Project

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_contract_has_its_one_setting():
    assert set(clients.ONE_SETTING) == set(Contract.values)


def test_the_readme_client_sections_are_rendered_from_the_table():
    text = README.read_text()
    blocks = {m["contract"] for m in clients.BLOCK_RE.finditer(text)}
    assert blocks == set(Contract.values), "every contract needs a one-setting block"
    assert clients.sync_readme(text) == text, (
        "README.md's one-setting blocks differ from telemetry/contracts/clients.py:"
        " run .venv/bin/python scripts/sync_readme.py"
    )


def test_a_project_with_a_hostname_is_set_up_at_its_root():
    project = Project(slug="dom", contract="domscribe", hostnames=["telemetry.domscribe.dev"])
    shown = clients.for_project(project=project, server="https://t.example.org")
    assert shown["text"] == "https://telemetry.domscribe.dev/v1/session"
    assert shown["also"] == ["https://t.example.org/p/dom"]


def test_a_project_without_one_is_set_up_under_its_slug():
    project = Project(slug="px", contract="pryx")
    shown = clients.for_project(project=project, server="http://127.0.0.1:8000")
    assert shown["lines"] == [
        "export PRYX_CLOUD_API_URL=http://127.0.0.1:8000/p/px/api"
        "   # or cloud_api_url in the config"
    ]
    assert "http://127.0.0.1:8000/p/px/api/v1/logs" in shown["note"]
    assert shown["also"] == []


def test_the_note_shows_code_spans_as_code_and_escapes_the_rest():
    html = clients.note_html("Set `A=<b>` & go")
    assert html == "Set <code>A=&lt;b&gt;</code> &amp; go"
