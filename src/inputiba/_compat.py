"""Module paths of inputiba 0.1's flat layout, kept importable with a :class:`DeprecationWarning`.

The package was reorganised into layers (``core``, ``modalities``, ``methods``, ``metrics``,
``models``, ``data``, ``workflows``, ``report``, ``cli``). ``import inputiba.explain`` (or any
other old path in :data:`MOVED`) still works: it gives a module that forwards every attribute to
the modules now holding those names, and warns once with the new location.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "install"]

#: Old module -> the modules that hold its public names now (searched in order).
MOVED: dict[str, tuple[str, ...]] = {
    "inputiba.functional": ("inputiba.core.functional",),
    "inputiba.estimator": ("inputiba.core.statistics",),
    "inputiba.bottleneck": ("inputiba.core.bottleneck",),
    "inputiba.gan": ("inputiba.core.gan",),
    "inputiba.config": ("inputiba.core.config",),
    "inputiba.layers": ("inputiba.core.layers",),
    "inputiba.fusion": ("inputiba.core.fusion",),
    "inputiba.attribution": ("inputiba.modalities.image", "inputiba.modalities.image_base",
                             "inputiba.core.targets"),
    "inputiba.explainers": ("inputiba.methods", "inputiba.methods.image",
                            "inputiba.methods.base", "inputiba.methods.nonlinearities"),
    "inputiba.extremal": ("inputiba.methods.extremal",),
    "inputiba.text_explainers": ("inputiba.methods", "inputiba.methods.text"),
    "inputiba.small_cnn": ("inputiba.models.small_cnn",),
    "inputiba.io": ("inputiba.data.io",),
    "inputiba.assets": ("inputiba.data.assets",),
    "inputiba.datasets": ("inputiba.data.datasets", "inputiba.data.folders"),
    "inputiba.explain": ("inputiba.workflows.explain", "inputiba.workflows.statistics",
                         "inputiba.workflows.records", "inputiba.workflows.image_outputs",
                         "inputiba.models.resolve",
                         "inputiba.core.targets", "inputiba.errors"),
    "inputiba.runs": ("inputiba.workflows.dataset", "inputiba.workflows.distributed",
                      "inputiba.workflows.run_files",
                      "inputiba.data.folders"),
    "inputiba.compare": ("inputiba.workflows.compare", "inputiba.report.compare",
                         "inputiba.metrics.evaluate", "inputiba.data.maps"),
    "inputiba.runconfig": ("inputiba.workflows.runconfig", "inputiba.errors"),
    "inputiba.visualize": ("inputiba.report.visualize",),
    "inputiba.text": ("inputiba.modalities.text", "inputiba.modalities.tokens",
                      "inputiba.workflows.text",
                      "inputiba.models.text", "inputiba.models.text_training",
                      "inputiba.data.text"),
    "inputiba.text.explain": ("inputiba.modalities.text", "inputiba.modalities.tokens",
                              "inputiba.workflows.text"),
    "inputiba.text.models": ("inputiba.models.text", "inputiba.models.text_training"),
    "inputiba.text.train": ("inputiba.models.text_training",),
    "inputiba.text.data": ("inputiba.data.text",),
    "inputiba.text.render": ("inputiba.report.text",),
}


class _MovedModule(types.ModuleType):
    """Stands for an old module path; attributes come from the modules in :data:`MOVED`."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: see {', '.join(targets)}.")
        self.__targets = targets
        if any(other.startswith(name + ".") for other in MOVED):
            self.__path__: list[str] = []  # a package: its old submodules import too

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            try:
                module = importlib.import_module(target)
            except ImportError:  # an optional extra that is not installed
                continue
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self.__targets)}) has no "
            f"attribute {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            try:
                names.update(dir(importlib.import_module(target)))
            except ImportError:
                continue
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, targets: tuple[str, ...]) -> None:
        self.targets = targets

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(
            f"{spec.name} is deprecated and will be removed: import from "
            f"{' / '.join(self.targets)} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return _MovedModule(spec.name, self.targets)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        targets = MOVED.get(fullname)
        if targets is None:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED)
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(targets),
                                              is_package=is_package)


def install() -> None:
    """Put the finder of the old module paths on :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
