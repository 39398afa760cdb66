"""Each rule's code param hashes its stage module's import closure, computed from the imports."""

from __future__ import annotations

import shutil
from pathlib import Path

from trtflow.core import codehash

REPO = Path(__file__).resolve().parent.parent


def test_closure_follows_imports_including_lazy_ones():
    closure = codehash.import_closure("quant.kernels")
    # kernels imports ort and cpu at module level and onnx.plugins
    assert {
        "trtflow.quant.kernels",
        "trtflow.onnx.ort",
        "trtflow.core.cpu",
        "trtflow.onnx.plugins",
    } <= set(closure)
    assert "trtflow.tf.yolov5" not in closure and "trtflow.trt.backends" not in closure
    assert codehash.import_closure("reporting.summary") == [
        "trtflow.core",
        "trtflow.core.cpu",
        "trtflow.core.errors",
        "trtflow.core.manifest",
        "trtflow.reporting",
        "trtflow.reporting.gates",
        "trtflow.reporting.summary",
    ]


def test_hash_changes_with_any_module_of_the_closure(tmp_path, monkeypatch):
    pkg = tmp_path / "trtflow"
    shutil.copytree(REPO / "trtflow", pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(codehash, "ROOT", pkg)
    codehash._imports.cache_clear()
    modules = ("quant.kernels", "reporting.summary", "stages.export")
    before = {m: codehash.code_hash(m) for m in modules}
    with (pkg / "core" / "cpu.py").open(
        "a"
    ) as fh:  # in kernels' and summary's closure, not export's
        fh.write("\n# edited\n")
    codehash._imports.cache_clear()
    after = {m: codehash.code_hash(m) for m in before}
    codehash._imports.cache_clear()
    assert after["quant.kernels"] != before["quant.kernels"]
    assert after["reporting.summary"] != before["reporting.summary"]
    assert after["stages.export"] == before["stages.export"]
