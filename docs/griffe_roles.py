"""Griffe extension for the documentation site: Sphinx roles in docstrings become links.

The docstrings name other objects the Sphinx way (``:func:`explain_images```,
``:class:`~inputiba.core.config.InputIBAConfig```). Markdown has no such roles, so each is
rewritten, once the package is loaded, into an *optional* cross-reference: the name is resolved
in the scope of the object whose docstring holds it (its members, its parents', the module's
imports); the result links to the object's entry in the API reference when that object is
rendered on some page, and reads as plain code otherwise (a name outside the package, say
``torch.fx``). ``~`` shows the last part of the path only, as in Sphinx.

Loaded by mkdocs.yml (``extensions: [docs/griffe_roles.py]``); used only by the site build.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

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


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the package into optional cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: ARG002
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _rewrite(obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
