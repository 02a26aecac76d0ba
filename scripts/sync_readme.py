"""Rewrite the README's "one setting" blocks from telemetry/contracts/clients.py.

Usage: .venv/bin/python scripts/sync_readme.py [--check]   (--check: exit 1 when they differ)
"""

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "sync-readme-only")
    django.setup()
    from telemetry.contracts.clients import sync_readme

    readme = ROOT / "README.md"
    text = readme.read_text()
    synced = sync_readme(text)
    if synced == text:
        print("README.md: one-setting blocks are up to date")
        return 0
    if "--check" in sys.argv:
        print("README.md: one-setting blocks differ; run scripts/sync_readme.py")
        return 1
    readme.write_text(synced)
    print("README.md: one-setting blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
