"""The package's layering (issue 13): the library never needs its CLI, imports form no cycle,
and the module paths of the flat 0.1 layout still import, with a deprecation warning."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import inputiba
from inputiba._compat import MOVED

ROOT = Path(inputiba.__file__).parent


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (function-level imports included)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                cands = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            for c in cands:
                while c and c not in modules and "." in c:
                    c = c.rsplit(".", 1)[0]
                if c in modules and c != name:
                    deps.add(c)
        graph[name] = deps
    return graph


def test_no_relative_imports_and_nothing_below_the_cli_imports_it():
    graph = _module_graph()
    users = sorted(m for m, deps in graph.items()
                   if not m.startswith("inputiba.cli") and any(d.startswith("inputiba.cli")
                                                                for d in deps))
    assert users == []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert not node.level, f"{path}: relative import (the package uses absolute ones)"


def test_no_import_cycles_between_modules():
    graph = _module_graph()
    # package __init__ files re-export their children; cycles through them are not layering
    inits = {m for m in graph if (ROOT.parent / m.replace(".", "/") / "__init__.py").is_file()}
    g = {m: {d for d in deps if d not in inits} for m, deps in graph.items() if m not in inits}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_core_knows_nothing_of_files_models_or_the_layers_above():
    graph = _module_graph()
    above = ("inputiba.modalities", "inputiba.methods", "inputiba.metrics", "inputiba.models",
             "inputiba.data", "inputiba.workflows", "inputiba.report", "inputiba.cli")
    for m, deps in graph.items():
        if m.startswith("inputiba.core"):
            assert not [d for d in deps if d.startswith(above)], m


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_import_with_a_deprecation_warning(old):
    for name in [n for n in sys.modules if n == old or n.startswith(old + ".")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning, match="deprecated"):
        module = importlib.import_module(old)
    # every name the old module offered is reachable: spot-check the first public one of
    # each new home
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for target in MOVED[old]:
            try:
                new = importlib.import_module(target)
            except ImportError:
                continue
            public = [n for n in getattr(new, "__all__", []) if hasattr(new, n)]
            if public:
                assert getattr(module, public[0]) is getattr(new, public[0])


def test_a_name_that_never_existed_is_an_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = importlib.import_module("inputiba.explain")
    with pytest.raises(AttributeError, match="no attribute"):
        _ = old.no_such_name


def test_the_lazy_public_names_resolve():
    for name in inputiba.__all__:
        try:
            assert getattr(inputiba, name) is not None
        except ImportError as exc:  # an optional extra not installed here
            pytest.skip(str(exc))
