"""Griffe extension for the documentation site: Sphinx roles in docstrings become links.

The docstrings name other objects the Sphinx way (``:func:`explain_images```,
``:class:`~inputiba.core.config.InputIBAConfig```). Markdown has no such roles, so each is
rewritten, once the package is loaded, into an *optional* cross-reference: the name is resolved
in the scope of the object whose docstring holds it (its members, its parents', the module's
imports); the result links to the object's entry in the API reference when that object is
rendered on some page, and reads as plain code otherwise (a name outside the package, say
``torch.fx``). ``~`` shows the last part of the path only, as in Sphinx.

Module and class attributes are documented the Sphinx way too, by ``#:`` comment lines just
above the assignment; griffe reads only string docstrings, so those comments become the
attribute's docstring here. And a section headed ``Example:`` (which the Google style parser
takes for an admonition, leaving its ``>>>`` lines as prose) is read as ``Examples:``.

Loaded by mkdocs.yml (``extensions: [docs/griffe_roles.py]``); used only by the site build.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import griffe

_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const|py:\w+):`(~?)([\w.]+)(\(\))?`")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as seen from ``obj``, or None where it cannot be resolved."""
    head, _, rest = name.partition(".")
    try:
        base = obj.resolve(head)
    except Exception:  # griffe raises NameResolutionError, or others on odd scopes
        if "." in name:
            return name  # already a dotted path: let the site decide whether it exists
        return None
    return f"{base}.{rest}" if rest else base


def _rewrite(obj: griffe.Object, text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        short, name, call = m.group(1), m.group(2), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if short else name) + call
        target = _resolve(obj, name)
        code = f"<code>{html.escape(shown)}</code>"
        if target is None:
            return code
        return f'<autoref identifier="{html.escape(target)}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


def _comment_docstring(attr: griffe.Object, sources: dict[str, list[str]]) -> str | None:
    """The ``#:`` comment lines just above ``attr``'s assignment, or None."""
    path, lineno = attr.filepath, attr.lineno
    if not isinstance(path, Path) or not lineno:
        return None
    key = str(path)
    if key not in sources:
        sources[key] = path.read_text(encoding="utf-8").splitlines()
    lines, i, found = sources[key], lineno - 2, []
    while i >= 0 and lines[i].strip().startswith("#:"):
        found.append(lines[i].strip()[2:].strip())
        i -= 1
    return "\n".join(reversed(found)) or None


class SphinxRoles(griffe.Extension):
    """Sphinx conventions in the package's docstrings, for the site: roles and ``#:``."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: ARG002
        seen: set[int] = set()
        sources: dict[str, list[str]] = {}
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is None and obj.is_attribute:
                text = _comment_docstring(obj, sources)
                if text:
                    obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None and ":" in obj.docstring.value:
                text = _EXAMPLE_HEADER.sub(r"\1Examples:", obj.docstring.value)
                obj.docstring.value = _rewrite(obj, text)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
