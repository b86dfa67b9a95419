"""Regenerate the parts of docs/ that are drawn from the code.

    python docs/generate.py           rewrite them in place
    python docs/generate.py --check   exit 1 (and say which) if any is out of date

A generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in
a Markdown file; everything outside the markers is written by hand. The tests run the
check, so a change to the code that changes a generated part fails until this is run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import cgwatchdog  # noqa: E402 - after the path: the checkout's package, not an installed one

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`")


def _summary(module: object) -> str:
    """The first paragraph of a module's docstring, on one line, without Sphinx roles."""
    doc = (getattr(module, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(doc.split())
    return _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text).replace("|", "\\|")


def modules_table() -> str:
    """Every module of the package and what it owns, from its docstring."""
    names = sorted(
        info.name
        for info in pkgutil.walk_packages(cgwatchdog.__path__, "cgwatchdog.")
        if not info.name.endswith("__main__")
    )
    rows = ["| module | owns |", "|---|---|"]
    for name in names:
        module = importlib.import_module(name)
        path = name.replace(".", "/")
        is_package = hasattr(module, "__path__")
        shown = f"`{path}/`" if is_package else f"`{path}.py`"
        rows.append(f"| {shown} | {_summary(module)} |")
    return "\n".join(rows)


SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {
    "modules": ("ARCHITECTURE.md", modules_table),
}


def render(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body``."""
    start, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/generate.py: no {start} ... {end} markers found")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def stale() -> list[str]:
    """The generated sections that differ from what the code gives now."""
    found = []
    for name, (file, make) in SECTIONS.items():
        text = (DOCS / file).read_text()
        if render(text, name, make()) != text:
            found.append(f"docs/{file} ({name})")
    return found


def write() -> None:
    """Rewrite every generated section."""
    for name, (file, make) in SECTIONS.items():
        path = DOCS / file
        path.write_text(render(path.read_text(), name, make()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is out of date")
    args = parser.parse_args()
    if args.check:
        out_of_date = stale()
        for what in out_of_date:
            print(f"out of date: {what}; run python docs/generate.py")
        return 1 if out_of_date else 0
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
