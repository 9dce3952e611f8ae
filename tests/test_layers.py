"""The package's layers, read from its source: a core that knows nothing of its features (docs/concepts.md).

Every import is read, function-level ones included. The core may reach a feature only through the one seam,
`hf_tlcv.integrations`, and only inside a function; a feature reaches the core only through public names. The check
runs on the real package, and on a copy with one core module made to import a feature, which it must reject.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_tlcv"
# The features: subpackages (and two modules) on top of the core; everything else in hf_tlcv is the core.
FEATURES = ("hf_tlcv.studies", "hf_tlcv.search", "hf_tlcv.audit", "hf_tlcv.hub", "hf_tlcv.plots", "hf_tlcv.ensemble",
            "hf_tlcv.recipe")
SEAM = "hf_tlcv.integrations"
FACADE = "hf_tlcv"  # the package's namespace: its public names load lazily from whichever layer defines them
MACHINERY = ("hf_tlcv._imports",)  # the lazy-import helpers every package's __init__ may use
OWN_NAMES = ("self", "cls", "super")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_feature(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FEATURES)


def imports_of(path: Path, root: Path) -> list[tuple[str, list[str], bool, int]]:
    """`(module, names, at_module_level, line)` of every hf_tlcv import in `path`, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body} | {id(n) for node in tree.body if isinstance(node, ast.If)
                                              for n in ast.walk(node)}  # `if TYPE_CHECKING:` blocks are top level
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: x is a module
                found += [(f"{target}.{n}", [], id(node) in top, node.lineno) for n in names]
                continue
        elif isinstance(node, ast.Import):
            target, names = "", []
            for alias in node.names:
                if alias.name.startswith("hf_tlcv"):
                    found.append((alias.name, [], id(node) in top, node.lineno))
            continue
        else:
            continue
        if target.startswith("hf_tlcv"):
            found.append((target, names, id(node) in top, node.lineno))
    return found


def private_attribute_reads(path: Path) -> list[tuple[str, int]]:
    """`other._name` reads: an object's private attribute used by code that is not its own class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in OWN_NAMES)
                and not (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super")):
            reads.append((f"{ast.unparse(node)}", node.lineno))
    return reads


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """What breaks the layering in the package at `root`, one sentence each (empty when it holds)."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        feature = is_feature(module)
        for target, names, top, line in imports_of(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if not feature and is_feature(target) and module != FACADE:
                if module != SEAM:
                    problems.append(f"{where}: core module {module} imports the feature {target} (reach features "
                                    f"through {SEAM})")
                elif top:
                    problems.append(f"{where}: the seam imports the feature {target} at module level (import it "
                                    "inside the function that needs it)")
            if feature and not is_feature(target):
                private = [n for n in names if n.startswith("_")]
                if private or (any(p.startswith("_") for p in target.split(".")[1:]) and target not in MACHINERY):
                    problems.append(f"{where}: feature module {module} imports private core names "
                                    f"{target} {private or ''}".rstrip())
        if feature or module == SEAM:
            for read, line in private_attribute_reads(path):
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} reads a private attribute: {read}")
    return problems


def test_the_core_imports_no_feature_and_features_use_only_public_core_names():
    assert layer_violations() == []


def test_the_check_rejects_a_core_module_that_imports_a_feature(tmp_path):
    # A copy of the package in which the results module (core) calls the card directly, as it did before 0.4.
    copy = tmp_path / "hf_tlcv"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    results = copy / "results.py"
    results.write_text(results.read_text(encoding="utf-8") + "\n\ndef card(cv):\n"
                       "    from .hub.card import build_model_card\n\n    return build_model_card(cv, None)\n",
                       encoding="utf-8")
    problems = layer_violations(copy)
    assert len(problems) == 1
    assert "core module hf_tlcv.results imports the feature hf_tlcv.hub.card" in problems[0]


@pytest.mark.parametrize("code, expected", [
    ("from ..trainer import _KEEP\n", "imports private core names hf_tlcv.trainer ['_KEEP']"),
    ("def f(trainer):\n    return trainer._user_collator\n", "reads a private attribute: trainer._user_collator"),
])
def test_the_check_rejects_a_feature_that_uses_private_core_names(tmp_path, code, expected):
    copy = tmp_path / "hf_tlcv"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "search" / "extra.py").write_text(code, encoding="utf-8")
    problems = layer_violations(copy)
    assert len(problems) == 1 and expected in problems[0], problems
