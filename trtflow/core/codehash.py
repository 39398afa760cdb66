"""Which trtflow code a rule runs: the closure that each rule's ``code`` param hashes.

Snakemake does not notice edits to modules a script imports. Every rule therefore passes a hash
of the trtflow source its script runs: the stage function it calls and the import closure of
every library name that function (or a helper of its module it calls) uses, found by reading the
imports with ``ast`` (lazy imports inside functions included), never by a hand-kept list.

What ``ast`` finds per file is cached in ``trtflow/__pycache__/codehash.json`` keyed by the
file's mtime and size (as Python's own .pyc files are), so a no-op rerun of a large zoo parses
nothing. Standard library only: rules/common.smk imports this when the DAG is built.
"""

from __future__ import annotations

import ast
import atexit
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PACKAGE = "trtflow"
ROOT = Path(__file__).resolve().parents[1]  # the trtflow package
CACHE_VERSION = 1

_disk: dict[str, Any] | None = None
_dirty = False


def _cache_file() -> Path:
    return ROOT / "__pycache__" / "codehash.json"


def _load_disk() -> dict[str, Any]:
    global _disk
    if _disk is None:
        try:
            data = json.loads(_cache_file().read_text(encoding="utf-8"))
            _disk = data["files"] if data.get("version") == CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            _disk = {}
    return _disk


def _save_disk() -> None:
    """Write the cache (best effort: a read-only checkout just parses every time)."""
    if not _dirty or _disk is None:
        return
    path = _cache_file()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": _disk}), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


atexit.register(_save_disk)


def clear_cache() -> None:
    """Forget everything parsed (tests that move ROOT)."""
    global _disk, _dirty
    _disk, _dirty = {}, False
    for fn in (_module_file, _facts, function_imports):
        fn.cache_clear()


@functools.cache
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


def _from_imports(node: ast.ImportFrom) -> dict[str, list[str]]:
    """``from trtflow.x import y as z`` -> {"z": ["trtflow.x", "trtflow.x.y"]}"""
    if not node.module or node.level != 0 or not node.module.startswith(PACKAGE):
        return {}
    return {a.asname or a.name: [node.module, f"{node.module}.{a.name}"] for a in node.names}


def _parse(path: Path) -> dict[str, Any]:
    """What codehash needs of one file: its sha256, every import, and per top-level definition
    the top-level names and lazily imported modules its body uses."""
    source = path.read_bytes()
    tree = ast.parse(source, str(path))
    imports: set[str] = set()
    anywhere: dict[str, list[str]] = {}  # every from-import, at any depth (a script's main())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names if a.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            found = _from_imports(node)
            anywhere.update(found)
            for candidates in found.values():
                imports.update(candidates)
    imported: dict[str, list[str]] = {}
    defs: dict[str, dict[str, list[str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            imported.update(_from_imports(node))
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            continue
        used, lazy = set(), set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                used.add(sub.id)
            elif isinstance(sub, ast.ImportFrom):
                for candidates in _from_imports(sub).values():
                    lazy.update(candidates)
        for name in names:
            defs[name] = {"names": sorted(used), "lazy": sorted(lazy)}
    return {
        "sha256": hashlib.sha256(source).hexdigest(),
        "imports": sorted(imports),
        "imported": imported,
        "anywhere": anywhere,
        "defs": defs,
    }


@functools.cache
def _facts(path: Path) -> dict[str, Any]:
    """``_parse(path)``, from the cache when the file's mtime and size are unchanged."""
    global _dirty
    st = path.stat()
    key = f"{st.st_mtime_ns}:{st.st_size}"
    disk = _load_disk()
    entry = disk.get(str(path))
    if entry is None or entry.get("key") != key:
        entry = {"key": key, **_parse(path)}
        disk[str(path)] = entry
        _dirty = True
    return entry


def _imports(name: str) -> frozenset[str]:
    """The trtflow modules one module imports (at any depth of its code)."""
    path = _module_file(name)
    if path is None:
        return frozenset()
    found = _facts(path)["imports"]
    return frozenset(m for m in found if _module_file(m) is not None and m != name)


def import_closure(*modules: str) -> list[str]:
    """Every trtflow module that ``modules`` (short names like ``"core.cpu"``) run, sorted."""
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


def _existing(candidates: list[str]) -> str | None:
    """The most specific of [module, module.name] that is a trtflow module."""
    for name in reversed(candidates):
        if _module_file(name) is not None:
            return name
    return None


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
    facts = _facts(path)
    defs, imported = facts["defs"], facts["imported"]
    if function not in defs:
        raise ValueError(f"{module} has no {function}")
    found: set[str] = set()
    todo, seen = [function], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for used in defs[name]["names"]:
            if used in imported:
                found.add(_existing(imported[used]) or imported[used][0])
            elif used in defs:
                todo.append(used)
        found.update(m for m in defs[name]["lazy"] if _module_file(m) is not None)
    return frozenset(m for m in found if _module_file(m) is not None)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def script_closure(script: str | Path) -> list[str]:
    """Every trtflow module a Snakemake script runs: for each ``from trtflow.x import f`` in it,
    the closure of ``f`` if x is a stage module, else of the module x."""
    facts = _facts(Path(script).resolve())
    libraries: set[str] = set()
    stages: set[str] = set()
    for module, sub in facts["anywhere"].values():
        if _module_file(sub) is not None:
            libraries.add(sub)
        elif module.startswith(f"{PACKAGE}.stages.") and _module_file(module) is not None:
            stages.update([module, *_parents(module)])
            libraries.update(function_imports(module, sub.rpartition(".")[2]))
        elif _module_file(module) is not None:
            libraries.add(module)
    return sorted(set(import_closure(*libraries)) | stages)


def _digest(names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(_facts(_module_file(name))["sha256"].encode())
    return h.hexdigest()[:16]


def code_hash(*modules: str) -> str:
    """sha256 (16 hex digits) over the source of ``import_closure(modules)``."""
    return _digest(import_closure(*modules))


def script_hash(script: str | Path) -> str:
    """sha256 (16 hex digits) over the source of ``script_closure(script)``."""
    return _digest(script_closure(script))
