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
        if parent != PACKAGE and parent:  # a submodule runs its package's __init__
            todo.append(parent)
    return sorted(seen)


def code_hash(*modules: str) -> str:
    """sha256 (16 hex digits) over the source of ``import_closure(modules)``."""
    h = hashlib.sha256()
    for name in import_closure(*modules):
        path = _module_file(name)
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
