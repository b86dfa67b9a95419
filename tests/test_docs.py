"""The documents drawn from the code are up to date (``python docs/generate.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_generated_documents_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(DOCS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_stale_section_is_caught(tmp_path: Path) -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import generate
    finally:
        sys.path.remove(str(DOCS))
    text = "intro\n<!-- generated: modules -->\nold\n<!-- end: modules -->\nrest\n"
    fresh = generate.render(text, "modules", "new")
    assert fresh == "intro\n<!-- generated: modules -->\nnew\n<!-- end: modules -->\nrest\n"
    assert generate.render(fresh, "modules", "new") == fresh


def test_every_threshold_field_is_described() -> None:
    from cgwatchdog.snapshot import FIELD_DOCS, FIELD_PATHS

    assert set(FIELD_DOCS) == FIELD_PATHS


def test_every_config_key_is_described() -> None:
    """The configuration reference explains every key: no empty description cells."""
    for name in ("CONFIGURATION.md", "RULES.md"):
        for line in (DOCS / name).read_text().splitlines():
            if line.startswith("| `"):
                assert not line.rstrip().endswith("|  |"), f"{name}: {line}"
