"""The arrows point one way (STYLE.md): contracts → ingest → models, api/dashboard → analytics →
models. No module imports a layer above it, not even inside a function, so no import circle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "telemetry"

# package → the packages above it, which it must never import
FORBIDDEN = {
    "contracts": ("telemetry.api", "telemetry.dashboard"),
    "ingest": ("telemetry.api", "telemetry.dashboard", "telemetry.contracts"),
    "analytics": ("telemetry.api", "telemetry.dashboard", "telemetry.contracts"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_its_own(package):
    wrong = {
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for path in sorted((ROOT / package).glob("*.py"))
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN[package])
    }
    assert not wrong, sorted(wrong)
