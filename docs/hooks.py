"""MkDocs hook: every public name of ``inputiba`` must have an entry in the API reference.

The names are read from ``src/inputiba/__init__.py`` without importing it (``__all__``, with
the lazily imported ``_LAZY`` names). A name is covered when some page of the site renders an
object of that name (an anchor ``inputiba.<...>.<name>``). An uncovered name is a warning, so
``mkdocs build --strict`` fails: a public name added or moved without its documentation
breaks the build.

``PENDING`` lists public names whose implementation is not in the source yet (work in
progress elsewhere): they are only reported while the source does not define them; once it
does, they must be documented like the rest.

Loaded by mkdocs.yml (``hooks: [docs/hooks.py]``); used only by the site build.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.api_coverage")

#: Names exported by ``inputiba`` that no module defines yet: name -> why.
PENDING: dict[str, str] = {}
SKIP = {"__version__"}

_ANCHOR = re.compile(r'id="(inputiba(?:\.[A-Za-z_]\w*)+)"')
_rendered: set[str] = set()


def _public_names(src: Path) -> tuple[list[str], dict[str, str]]:
    """``(__all__ with the _LAZY names expanded, {lazy name: its module})``."""
    tree = ast.parse((src / "inputiba" / "__init__.py").read_text(encoding="utf-8"))
    names: list[str] = []
    lazy: dict[str, str] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or value is None:
            continue
        if target.id == "_LAZY" and isinstance(value, ast.Dict):
            pairs = zip(value.keys, value.values, strict=True)
            lazy = {ast.literal_eval(k): ast.literal_eval(v) for k, v in pairs}
        elif target.id == "__all__" and isinstance(value, ast.List):
            for elt in value.elts:
                if isinstance(elt, ast.Constant):
                    names.append(elt.value)
                elif isinstance(elt, ast.Starred):  # *_LAZY
                    names.extend(lazy)
    return names, lazy


def _defined(src: Path, module: str, name: str) -> bool:
    """Whether ``module`` (a path under src) defines or imports ``name`` at its top level."""
    path = src.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.exists():
        return False
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _rendered.clear()


def on_post_page(output: str, page: Any, config: Any, **kwargs: Any) -> str:
    _rendered.update(m.rsplit(".", 1)[-1] for m in _ANCHOR.findall(output))
    return output


def on_post_build(config: Any, **kwargs: Any) -> None:
    src = Path(config["config_file_path"]).parent / "src"
    names, lazy = _public_names(src)
    for name in names:
        if name in SKIP or name in _rendered:
            continue
        if name in PENDING and not _defined(src, lazy.get(name, "inputiba"), name):
            log.info("API reference: inputiba.%s is not defined yet (%s)", name, PENDING[name])
            continue
        log.warning(
            "API reference: the public name inputiba.%s has no entry (add it to a page in docs/api/)",
            name,
        )
