"""How hf_tlcv's names are imported: lazily (PEP 562), and from the paths of hf_tlcv 0.3 that moved in 0.4.

`lazy_names` gives a package the module-level `__getattr__` and `__dir__` that import a public name's module on first
use (`import hf_tlcv` loads no model or plotting code). The old paths are kept working for one release with a
`FutureWarning`:

`import hf_tlcv.study` (or `from hf_tlcv.model_card import ...`) still works: the old name is a thin module whose
attributes are read, at each access, from the module's new home, so both names see the same objects. The paths
`hf_tlcv.search`, `hf_tlcv.audit`, `hf_tlcv.hub` and `hf_tlcv.plots` did not move: they are the feature
subpackages now, and re-export what their modules exported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import inspect
import sys
import warnings

# old path -> new path; removed in REMOVED_IN
MOVED = {
    "hf_tlcv.study": "hf_tlcv.studies.study",
    "hf_tlcv.report": "hf_tlcv.studies.report",
    "hf_tlcv.study_plots": "hf_tlcv.studies.plots",
    "hf_tlcv.overfitting": "hf_tlcv.studies.overfitting",
    "hf_tlcv.baselines": "hf_tlcv.studies.baselines",
    "hf_tlcv.nested": "hf_tlcv.studies.selection",
    "hf_tlcv.search_report": "hf_tlcv.search.report",
    "hf_tlcv.audit_plots": "hf_tlcv.audit.plots",
    "hf_tlcv.audit_injection": "hf_tlcv.audit.injection",
    "hf_tlcv.model_card": "hf_tlcv.hub.card",
}
REMOVED_IN = "0.5.0"


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of [`MOVED`]; each loads as a module that forwards every attribute to the new one."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # an ordinary empty module, filled by exec_module

    def exec_module(self, module) -> None:
        new_name = MOVED[module.__name__]
        # The caller's frame is under importlib's: skip those so that the warning names the import line.
        warnings.warn(f"{module.__name__} moved to {new_name} in hf_tlcv 0.4; the old path works until "
                      f"{REMOVED_IN}. Import from {new_name} instead.", FutureWarning, stacklevel=_caller_level())
        new = importlib.import_module(new_name)
        module.__getattr__ = lambda name: getattr(new, name)
        module.__dir__ = lambda: dir(new)
        module.__all__ = list(getattr(new, "__all__", []))
        module.__doc__ = f"Moved to `{new_name}` (this path works until hf_tlcv {REMOVED_IN})."


def _caller_level() -> int:
    """The `stacklevel`, for a warning raised in `exec_module`, of the first frame outside the import machinery (the
    line that imported the old path, through `import` or `importlib.import_module`)."""
    # the caller of exec_module: stacklevel 2 of a warning raised there
    frame, level = inspect.currentframe().f_back.f_back, 2
    while frame is not None and frame.f_code.co_filename.startswith(("<frozen importlib", importlib.__file__)):
        # `warnings` skips importlib's frozen frames by itself: only the others count
        level += not frame.f_code.co_filename.startswith("<frozen importlib")
        frame = frame.f_back
    return level


def lazy_names(package: str, names: dict[str, str]):
    """`(__getattr__, __dir__)` for `package`'s namespace: `names` maps a public name to the (relative) module that
    defines it, imported on first access."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


def install() -> None:
    """Put the finder on `sys.meta_path` once (called by `import hf_tlcv`)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
