"""mkdocs hook: the configuration page's settings reference, generated from the settings model.

The page keeps its hand-written prose; the marker ``<!-- settings-reference -->`` is replaced by
one table per section of :class:`stroke_dagster.core.settings.Settings`, built by introspection,
so the reference cannot drift from the code:

- fields, types, constraints and defaults from the pydantic model;
- environment variables from ``ENV_VARS`` (the only variables :func:`load_settings` reads);
- descriptions from the field's ``description``, else the source comment on or just above the
  field (written as a one-line meaning), else the first sentence of the ``- ``name``: ...``
  bullet of the section's docstring.

Every variable of ``ENV_VARS`` must name a field; one that does not fails the build.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import io
import re
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

MARKER = "<!-- settings-reference -->"
PAGE = "configuration.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker on the configuration page (every other page is returned as it is)."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its marker {MARKER}")
    return markdown.replace(MARKER, settings_reference())


def settings_reference() -> str:
    """The generated Markdown: the top-level fields, then one section per sub-model."""
    from stroke_dagster.core import settings as module

    by_path = {path: name for name, (path, _) in module.ENV_VARS.items()}
    top = module.Settings
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()

    plain = {n: f for n, f in top.model_fields.items() if not _is_section(f)}
    out += [
        "### Paths and stores",
        "",
        _paragraph(_docstring_paragraphs(top)[0]),
        "",
        *_table(top, plain, (), by_path, seen),
    ]
    for name, field in top.model_fields.items():
        if not _is_section(field):
            continue
        section = field.annotation
        paragraphs = _docstring_paragraphs(section)
        out += ["", f"### `{name}`", "", f"`{section.__name__}`: {_paragraph(paragraphs[0])}", ""]
        out += _table(section, section.model_fields, (name,), by_path, seen)

    unmatched = sorted(name for path, name in by_path.items() if path not in seen)
    if unmatched:
        raise ValueError(f"ENV_VARS names no settings field: {', '.join(unmatched)}")
    return "\n".join(out) + "\n"


def _is_section(field: FieldInfo) -> bool:
    return inspect.isclass(field.annotation) and issubclass(field.annotation, BaseModel)


def _table(
    cls: type[BaseModel],
    fields: dict[str, FieldInfo],
    prefix: tuple[str, ...],
    by_path: dict[tuple[str, ...], str],
    seen: set[tuple[str, ...]],
) -> list[str]:
    bullets = _docstring_bullets(cls)
    comments = _source_comments(cls)
    rows = [
        "| field | environment variable | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in fields.items():
        path = (*prefix, name)
        seen.add(path)
        variable = f"`{by_path[path]}`" if path in by_path else "—"
        comment = comments.get(name, "")
        default = _default(field, comment)
        if comment.lower().startswith("default:"):
            comment = ""
        meaning = field.description or comment or bullets.get(name) or ""
        cells = [f"`{'.'.join(path)}`", variable, _type(field), default, _inline(meaning)]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def _type(field: FieldInfo) -> str:
    text = _annotation(field.annotation)
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                value = getattr(item, attr)
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                bounds.append(f"{sign} {value}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _annotation(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_annotation(a) for a in args) + ", optional"
    names = {Path: "path", dt.date: "date", bool: "boolean", str: "text", int: "integer"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo, comment: str) -> str:
    if comment.lower().startswith("default:"):
        return f"`{comment.split(':', 1)[1].strip()}`"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1` (on)" if value else "`0` (off)"
    if isinstance(value, int) and value >= 1024**2 and value % 1024**2 == 0:
        mib = value // 1024**2
        size = f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
        return f"`{value}` ({size})"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _inline(text: str) -> str:
    """reST to Markdown for a table cell: roles and double backquotes to code, one line."""
    text = re.sub(r":(?:class|func|mod|data|meth|attr):`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    # "<" outside code spans would open an HTML tag ("<home>"): escape it.
    parts = text.split("`")
    parts[::2] = [part.replace("<", "&lt;") for part in parts[::2]]
    return " ".join("`".join(parts).split())


def _paragraph(text: str) -> str:
    return _inline(text)


def _docstring_paragraphs(cls: type) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    return [p for p in re.split(r"\n\s*\n", doc) if p.strip()] or [""]


def _docstring_bullets(cls: type) -> dict[str, str]:
    """``- ``name`` (...): text`` items of the docstring: the first sentence of text, per name."""
    found: dict[str, str] = {}
    doc = inspect.getdoc(cls) or ""
    for item in re.split(r"\n(?=- )", doc):
        if not item.startswith("- "):
            continue
        item = " ".join(item[2:].split())
        head, text = _split_head(item)
        if text is None:
            continue
        for name in re.findall(r"``(\w+)``", head):
            found.setdefault(name, _first_sentence(text))
    return found


def _split_head(item: str) -> tuple[str, str | None]:
    """``head: text`` split at the first colon outside parentheses and backquotes."""
    depth, quoted = 0, False
    for i, char in enumerate(item):
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ":" and item[i + 1 : i + 2] == " ":
            return item[:i], item[i + 2 :]
    return item, None


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not "e.g.", "et al.", a decimal)."""
    for match in re.finditer(r"\.(\s+|$)", text):
        before = text[: match.start()]
        if re.search(r"(\be\.g|\bi\.e|\bet al|\bvs|\bcf)$", before):
            continue
        sentence = before + "."
        if len(sentence) < 40:  # a bare name ("the AUC margin."): add the next sentence
            rest = text[match.end() :]
            return f"{sentence} {_first_sentence(rest)}".strip() if rest else sentence
        return sentence
    return text.strip()


def _source_comments(cls: type) -> dict[str, str]:
    """The comment on a field's line, else the comment lines just above it."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if node.lineno in comments and lines[node.lineno - 1].lstrip()[0] != "#":
            found[node.target.id] = comments[node.lineno]
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        if above:
            found[node.target.id] = " ".join(above)
    return found
