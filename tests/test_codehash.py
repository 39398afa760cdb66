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
        "trtflow",
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
    codehash.clear_cache()
    modules = ("quant.kernels", "reporting.summary", "stages.export")
    before = {m: codehash.code_hash(m) for m in modules}
    with (pkg / "core" / "cpu.py").open(
        "a"
    ) as fh:  # in kernels' and summary's closure, not export's
        fh.write("\n# edited\n")
    codehash.clear_cache()
    after = {m: codehash.code_hash(m) for m in before}
    codehash.clear_cache()
    assert after["quant.kernels"] != before["quant.kernels"]
    assert after["reporting.summary"] != before["reporting.summary"]
    assert after["stages.export"] == before["stages.export"]


def test_each_rule_hashes_what_its_stage_function_reaches():
    scripts = REPO / "scripts"
    quantize = codehash.script_closure(scripts / "quantize_onnx.py")
    bench = codehash.script_closure(scripts / "benchmark_int8.py")
    assert "trtflow.stages.quantize" in quantize and "trtflow.stages.quantize" in bench
    assert "trtflow.quant.kernels" in bench and "trtflow.quant.kernels" not in quantize
    assert "trtflow.quant.qdq" in quantize and "trtflow.quant.qdq" not in bench
    assert "trtflow.core.runner" in quantize  # the script's own import


def test_the_parse_cache_is_invalidated_by_an_edit(tmp_path, monkeypatch):
    pkg = tmp_path / "trtflow"
    shutil.copytree(REPO / "trtflow", pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(codehash, "ROOT", pkg)
    codehash.clear_cache()
    before = codehash.code_hash("stages.export")
    codehash._save_disk()
    assert (pkg / "__pycache__" / "codehash.json").is_file()
    codehash.clear_cache()  # a new process: only the file cache is left
    codehash._disk = None
    assert codehash.code_hash("stages.export") == before  # from the cache
    with (pkg / "tf" / "yolov5.py").open("a") as fh:
        fh.write("\n# edited\n")
    codehash.clear_cache()
    codehash._disk = None
    assert codehash.code_hash("stages.export") != before
    codehash.clear_cache()
