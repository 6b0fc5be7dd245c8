"""mkdocs hook: each API-reference page lists every module of its package, found on disk.

A page holds the marker ``<!-- api-reference: stroke_dagster.clinical -->``; the hook replaces it
with the package's own docstring and one mkdocstrings block (``::: module``) per module under the
package, subpackages included, in path order. A module added to a package appears in the
reference without editing the page.

The docstrings are written with reST roles (``:func:`name```), which Markdown shows as the role
followed by the name in code; the rendered page keeps the code and drops the role
(``~package.name`` becomes ``name``, as Sphinx shows it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- api-reference: ([\w.]+) -->")
ROLE = re.compile(
    r":(?:py:)?(?:func|class|mod|data|meth|attr|exc|obj|const|term|ref):"
    r"<code>(~?)([^<]*)</code>"
)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the marker of an API-reference page (other pages are returned as they are)."""
    return MARKER.sub(lambda m: package_reference(m.group(1)), markdown)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Drop the reST role before a code span (``:func:<code>x</code>`` -> ``<code>x</code>``)."""
    return ROLE.sub(_role, html)


def _role(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def package_reference(package: str) -> str:
    """The package docstring, then one ``:::`` block per module of the package."""
    folder = ROOT.joinpath(*package.split("."))
    if not (folder / "__init__.py").is_file():
        raise ValueError(f"api-reference: {package} is not a package under {ROOT}")
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    for path in sorted(folder.rglob("*.py")):
        if path.name == "__main__.py" or "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            if path.parent == folder:
                continue
            parts = parts[:-1]
        blocks.append(f"::: {'.'.join(parts)}")
    return "\n\n".join(blocks) + "\n"
