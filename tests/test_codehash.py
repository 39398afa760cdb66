"""Each rule's code param hashes its stage module's import closure, computed from the imports."""

from __future__ import annotations

import shutil
from pathlib import Path

from trtflow import codehash

REPO = Path(__file__).resolve().parent.parent


def test_closure_follows_imports_including_lazy_ones():
    closure = codehash.import_closure("int8_bench")
    # int8_bench imports bench and cpu at module level and quantize inside a function
    assert {"trtflow.int8_bench", "trtflow.bench", "trtflow.cpu", "trtflow.quantize"} <= set(
        closure
    )
    assert "trtflow.yolov5" not in closure and "trtflow.engine" not in closure
    assert codehash.import_closure("summary") == [
        "trtflow.cpu", "trtflow.errors", "trtflow.gates", "trtflow.manifest", "trtflow.summary"
    ]  # fmt: skip


def test_hash_changes_with_any_module_of_the_closure(tmp_path, monkeypatch):
    pkg = tmp_path / "trtflow"
    shutil.copytree(REPO / "trtflow", pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(codehash, "ROOT", pkg)
    codehash._imports.cache_clear()
    before = {m: codehash.code_hash(m) for m in ("int8_bench", "summary", "export")}
    with (pkg / "cpu.py").open("a") as fh:  # in int8_bench's and summary's closure, not export's
        fh.write("\n# edited\n")
    codehash._imports.cache_clear()
    after = {m: codehash.code_hash(m) for m in before}
    codehash._imports.cache_clear()
    assert after["int8_bench"] != before["int8_bench"]
    assert after["summary"] != before["summary"]
    assert after["export"] == before["export"]
