"""Which trtflow modules a stage runs: the import closure that each rule's ``code`` param hashes.

Snakemake does not notice edits to modules a script imports. Every rule therefore passes a hash
of the source of its stage module *and everything that module imports from trtflow*, found by
reading the imports (``ast``; lazy imports inside functions included), never by a hand-kept
list. Standard library only: rules/common.smk imports this when the DAG is built.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "trtflow"
ROOT = Path(__file__).resolve().parents[1]  # the trtflow package


def _module_file(name: str) -> Path | None:
    """trtflow.a.b -> trtflow/a/b.py or trtflow/a/b/__init__.py (None if not trtflow's)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def _imports(name: str) -> frozenset[str]:
    """The trtflow modules one module imports (at any depth of its code)."""
    path = _module_file(name)
    if path is None:
        return frozenset()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # from pkg import mod
    return frozenset(m for m in found if _module_file(m) is not None and m != name)


def import_closure(*modules: str) -> list[str]:
    """Every trtflow module that ``modules`` (short names like ``"bench"``) run, sorted."""
    todo = [m if m.startswith(f"{PACKAGE}.") else f"{PACKAGE}.{m}" for m in modules]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(_imports(name))
        parent = name.rpartition(".")[0]
        if parent:  # a submodule runs its package's __init__ (trtflow/__init__.py too)
            todo.append(parent)
    return sorted(seen)


def _imported_names(tree: ast.Module, module: str) -> dict[str, str]:
    """Top-level ``from trtflow.x import y`` of a module: local name -> trtflow module it names."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                target = sub if _module_file(sub) else node.module
                if _module_file(target) is not None:
                    names[a.asname or a.name] = target
    return names


@functools.cache
def function_imports(module: str, function: str) -> frozenset[str]:
    """The trtflow modules that ``function`` of ``module`` reaches.

    Through the imported names it uses — directly or through the module's own helpers,
    constants and classes it uses — and its lazy imports. Imports of the module that only its
    other functions use are left out: a stage module's rules each hash what they run.
    """
    path = _module_file(module)
    if path is None:
        raise ValueError(f"{module} is not a trtflow module")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    defs: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    defs[target.id] = node
    if function not in defs:
        raise ValueError(f"{module} has no {function}")
    imported = _imported_names(tree, module)
    found: set[str] = set()
    todo, seen = [function], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(defs[name]):
            if isinstance(node, ast.Name):
                if node.id in imported:
                    found.add(imported[node.id])
                elif node.id in defs:
                    todo.append(node.id)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(m for m in _imported_names(ast.Module([node], []), module).values())
    return frozenset(found)


def script_closure(script: str | Path) -> list[str]:
    """Every trtflow module a Snakemake script runs: for each ``from trtflow.x import f`` in it,
    the closure of ``f`` if x is a stage module, else of the module x."""
    path = Path(script)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
            continue
        if not node.module.startswith(f"{PACKAGE}.") or _module_file(node.module) is None:
            continue
        for a in node.names:
            sub = f"{node.module}.{a.name}"
            if _module_file(sub) is not None:
                modules.add(sub)
            elif node.module.startswith(f"{PACKAGE}.stages."):
                modules.add(node.module)  # its own source, and what this function reaches
                modules.update(function_imports(node.module, a.name))
                modules.update(_parents(node.module))
                continue
            else:
                modules.add(node.module)
    closure = set(import_closure(*(m for m in modules if not m.startswith(f"{PACKAGE}.stages."))))
    closure.update(m for m in modules if m.startswith(f"{PACKAGE}.stages"))
    return sorted(closure)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _digest(names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        path = _module_file(name)
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def code_hash(*modules: str) -> str:
    """sha256 (16 hex digits) over the source of ``import_closure(modules)``."""
    return _digest(import_closure(*modules))


def script_hash(script: str | Path) -> str:
    """sha256 (16 hex digits) over the source of ``script_closure(script)``."""
    return _digest(script_closure(script))
