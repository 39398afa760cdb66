"""trtflow.reporting (pages, gates) on hand-written stage reports (no TensorFlow, no workflow):
engine rows, missing keys and missing results, the gate check. The report of a real tiny zoo,
in Snakemake's report and in Chromium, is tested in test_workflow.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtflow.core.errors import TrtflowError
from trtflow.reporting import gates
from trtflow.reporting.pages import PLOTS, build_times, fastest, zoo_rows
from trtflow.stages.report import render_report


def _write(root: Path, rel: str, data: dict) -> str:
    path = root / "results" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def zoo(tmp_path):
    """One model: fp32 ONNX timed at b1 on the CPU, an fp16 engine on target 'orin' at b1."""
    w = lambda rel, data: _write(tmp_path, rel, data)  # noqa: E731
    return {
        "patched_manifests": [w("patched/m/320/model.onnx.manifest.json",
                                {"size_bytes": 8_000_000, "seconds": 1.5, "stage": "patch"})],
        "bench": [w("benchmark_onnx/m/320/b1.json",
                    {"batch": 1, "p50_ms": 30.0, "p90_ms": 31.0, "p99_ms": 35.0})],
        "parity": [w("parity/m/320/parity.json", {"ok": True, "max_abs": 1e-4})],
        "engine_manifests": [w("engine/orin/m/320/fp16/b1.engine.manifest.json",
                               {"size_bytes": 5_000_000, "build_seconds": 42.0})],
        "engine_bench": [w("benchmark_engine/orin/m/320/fp16/b1.json",
                           {"batch": 1, "precision": "fp16", "host_latency": {
                               "p50_ms": 3.0, "p90_ms": 3.2, "p99_ms": 4.0}})],
        "engine_parity": [w("parity_engine/orin/m/320/fp16/b1.json",
                            {"ok": True, "max_abs": 0.02})],
    }  # fmt: skip


def test_engine_row_speedup_against_the_fp32_onnx_at_the_same_batch(zoo):
    rows = zoo_rows(**zoo)
    assert [(r["artifact"], r["target"]) for r in rows] == [("ONNX", "cpu"), ("engine b1", "orin")]
    engine = rows[1]
    assert engine["speedup"] == 10.0 and engine["size_mb"] == 5.0 and engine["p99_ms"] == 4.0
    assert engine["parity"] == "ok (max abs 0.02)" and engine["gate"] == "engine parity ok"
    best = {b["target"]: b for b in fastest(rows)}
    assert best["orin"]["fastest"] == "engine b1 fp16" and best["orin"]["speedup"] == 10.0
    assert best["orin"]["accuracy cost"] == "not measured"
    assert best["cpu"]["accuracy cost"] == "none (the fp32 reference)"
    times = build_times(zoo["patched_manifests"] + zoo["engine_manifests"])
    assert times == {"m@320": {"patch": 1.5, "engine orin fp16": 42.0}}


def test_missing_keys_and_results_leave_empty_cells(tmp_path, zoo):
    """A stage that writes fewer keys (or a result that is not there) is no error."""
    bare = {"bench": [_write(tmp_path, "benchmark_onnx/n/64/b1.json", {"batch": 1})],
            "int8_bench": [_write(tmp_path, "benchmark_int8/n/64/b1.json", {})]}  # fmt: skip
    rows = zoo_rows(**bare)
    assert [r["p50_ms"] for r in rows] == [None, None]
    out = tmp_path / "out"
    missing = {
        "results/benchmark_engine/orin/m/320/int8/b1.json": str(tmp_path / "build.log"),
        "results/benchmark_engine/orin/m/320/best/b1.json": str(tmp_path / "none.log"),
    }
    (tmp_path / "build.log").write_text("INFO start\nERROR build failed: no INT8 on this device\n")
    render_report(out / "zoo.html", {k: out / f"{k}.png" for k in PLOTS},
                         out / "models", out / "targets", missing=missing, **bare)  # fmt: skip
    page = (out / "zoo.html").read_text()
    assert "<b class=bad>2 failed</b>" in page
    assert "ERROR build failed: no INT8 on this device" in page and "not run (no log)" in page
    for k in PLOTS:  # an empty plot says why it is empty
        assert (out / f"{k}.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "models/n/64.html").is_file() and (out / "targets/cpu.html").is_file()


def test_check_gates_fails_with_every_failed_verdict_and_passes_otherwise(tmp_path):
    ok = _write(tmp_path, "parity/a/64/parity.json", {"ok": True})
    bad = _write(tmp_path, "int8_gate/b/64/gate.json",
                 {"ok": False, "failures": ["mAP@.5 0.41 < floor 0.5"]})  # fmt: skip
    with pytest.raises(TrtflowError, match=r"1 of 2 gates failed: int8 b/64: mAP@.5 0.41") as e:
        gates.check_gates([ok, bad], tmp_path / "gates.json")
    assert "int8.method" in str(e.value)  # the fix
    assert not (tmp_path / "gates.json").exists()
    assert gates.describe([ok, bad]) == {("a", "64"): "parity ok", ("b", "64"): "int8 FAILED"}
    gates.check_gates([ok], tmp_path / "gates.json")
    assert json.loads((tmp_path / "gates.json").read_text())["ok"] is True
