"""Engine stage, unit level: the version/flag table, trtexec argv builders, JSON export parsers,
preflight on tiny ONNX models, the trtexec stand-in, and failure messages of local targets."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_support import REPO, STANDIN, make_trtexec, tiny_patched_onnx
from onnx import TensorProto, helper, numpy_helper

from trtflow.core.errors import TrtflowError
from trtflow.stages.engine import benchmark_engine, build_engine, check_engine_parity, preflight
from trtflow.trt import trtexec
from trtflow.trt.checks import ops_table_for
from trtflow.trt.targets import (
    GENERATIONS,
    generation,
    parse_profile,
    profile_name,
    same_version,
    version_from_tag,
    version_tag,
)

DATA = Path(__file__).parent / "data" / "trtexec"
DYN = ["batch", 3, 32, 32]


# ---------------------------------------------------------------- version table and argv


def _build(version: str, **kw: object) -> list[str]:
    args: dict = dict(
        trtexec="trtexec",
        onnx="m.onnx",
        engine="m.engine",
        precision="fp16",
        input_name="images",
        input_shape=DYN,
        profile=parse_profile("b1-4-8"),
        workspace_mib=1024,
        timing_cache="t.cache",
    )
    args.update(kw)
    return trtexec.build_argv(version, **args)


def test_build_flags_trt82_vs_trt10():
    a8 = _build("8.2.1")
    a10 = _build("10.3")
    assert "--workspace=1024" in a8 and "--explicitBatch" in a8 and "--buildOnly" in a8
    assert not any(a.startswith("--memPoolSize") or a == "--skipInference" for a in a8)
    assert "--memPoolSize=workspace:1024M" in a10 and "--skipInference" in a10
    removed = GENERATIONS[10].removed_flags
    assert not [a for a in a10 if a.split("=")[0] in removed]
    for argv in (a8, a10):
        assert "--minShapes=images:1x3x32x32" in argv
        assert "--optShapes=images:4x3x32x32" in argv
        assert "--maxShapes=images:8x3x32x32" in argv
        assert "--fp16" in argv and "--timingCacheFile=t.cache" in argv


def test_static_onnx_gets_no_shapes_and_dynamic_needs_a_profile():
    argv = _build("10.3", input_shape=[1, 3, 32, 32], profile=None)
    assert not [a for a in argv if "Shapes" in a]
    with pytest.raises(TrtflowError, match="dynamic batch but no batch profile"):
        _build("10.3", profile=None)


def test_precision_flags():
    assert trtexec.precision_flags("fp32", None, False) == []
    assert trtexec.precision_flags("int8", "c.cache", False) == ["--int8", "--calib=c.cache"]
    assert trtexec.precision_flags("int8", None, True) == ["--int8"]
    assert trtexec.precision_flags("best", "c.cache", False) == ["--best", "--calib=c.cache"]
    with pytest.raises(TrtflowError, match="unknown precision"):
        trtexec.precision_flags("fp8", None, False)


def test_dla_and_benchmark_flags():
    argv = _build("8.2.1", dla_core=0)
    assert "--useDLACore=0" in argv and "--allowGPUFallback" in argv
    b = trtexec.benchmark_argv(
        "10.3",
        trtexec="trtexec",
        engine="e",
        input_name="images",
        input_shape=DYN,
        batch=4,
        times_json="t.json",
        profile_json="p.json",
        use_cuda_graph=True,
        no_data_transfers=True,
    )
    assert "--shapes=images:4x3x32x32" in b and "--useCudaGraph" in b
    assert "--noDataTransfers" in b and "--exportProfile=p.json" in b
    static = trtexec.benchmark_argv(
        "10.3",
        trtexec="trtexec",
        engine="e",
        input_name="images",
        input_shape=[2, 3, 32, 32],
        batch=2,
        times_json="t.json",
        profile_json=None,
    )
    assert not [a for a in static if a.startswith("--shapes")]


def test_versions():
    assert version_tag("8.2.1") == "v8201" and version_from_tag("v8201") == "8.2.1"
    assert version_tag("10.3.0") == "v100300" and version_from_tag("v100300") == "10.3.0"
    assert same_version("10.3", "10.3.0") and not same_version("8.2.1", "8.2.3")
    with pytest.raises(TrtflowError, match="not in trtflow's version table"):
        generation("7.1.3", "old")
    with pytest.raises(TrtflowError, match="MAJOR.MINOR"):
        generation("ten")


def test_profiles():
    assert parse_profile("b4") == {"min": 4, "opt": 4, "max": 4}
    assert parse_profile("b1-4-8") == {"min": 1, "opt": 4, "max": 8}
    assert profile_name(1, 4, 8) == "b1-4-8" and profile_name(2, 2, 2) == "b2"
    with pytest.raises(TrtflowError, match="min <= opt <= max"):
        parse_profile("b8-4-1")


# ---------------------------------------------------------------- JSON export parsers


def test_parse_real_profiles():
    p8 = trtexec.parse_profile(DATA / "profile_8x_real.json", top=3)
    assert p8["profiled_iterations"] == 625 and p8["layers"] == 12
    assert p8["slowest_layers"][0]["name"] == "Conv_13 + PWN(Clip_16)"
    assert p8["slowest_layers"][0]["median_ms"] is None
    p10 = trtexec.parse_profile(DATA / "profile_10x_real.json")
    assert p10["profiled_iterations"] == 41400
    assert p10["slowest_layers"][0]["median_ms"] == pytest.approx(0.027872)


@pytest.mark.parametrize(
    "name", ["times_7x_constructed", "times_8x_constructed", "times_10x_constructed"]
)
def test_parse_times_every_generation(name):
    t = trtexec.parse_times(DATA / f"{name}.json", batch=2)
    data = json.loads((DATA / f"{name}.json").read_text())
    compute = [e["computeMs"] for e in data]
    latency = [e["latencyMs"] for e in data]
    assert t["iterations"] == len(data)
    assert t["gpu_compute"]["p50_ms"] == pytest.approx(float(np.percentile(compute, 50)))
    assert t["host_latency"]["p99_ms"] == pytest.approx(float(np.percentile(latency, 99)))
    assert t["host_latency"]["mean_ms"] > t["gpu_compute"]["mean_ms"]
    assert t["throughput_ips"] == pytest.approx(2 * t["throughput_qps"])
    assert t["h2d"]["mean_ms"] > 0 and t["d2h"]["mean_ms"] > 0


def test_parse_outputs():
    out = trtexec.parse_outputs(DATA / "output_constructed.json")
    assert out["output0"].shape == (1, 2, 3) and out["output0"][0, 1, 0] == pytest.approx(3e-5)
    assert out["num_dets"].shape == (1, 1)


def test_parsers_reject_other_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('[{"name": "a"}]')
    with pytest.raises(TrtflowError, match="count"):
        trtexec.parse_profile(bad)
    with pytest.raises(TrtflowError, match="computeMs"):
        trtexec.parse_times(bad)
    with pytest.raises(TrtflowError, match="cannot read"):
        trtexec.parse_times(tmp_path / "missing.json")


def test_probe_and_error_lines():
    log = (
        "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=a\n"
        "[I] Selected Device: NVIDIA Tegra X1\n[E] [TRT] 1: Cuda Runtime (out of memory)\n"
    )
    assert trtexec.probe_log(log) == {"tensorrt": "8.2.1", "device": "NVIDIA Tegra X1"}
    assert trtexec.is_out_of_memory(log)
    assert "out of memory" in trtexec.error_lines(log)


# ---------------------------------------------------------------- preflight on tiny models


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    ops = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    m = helper.make_model(graph, opset_imports=ops)
    m.ir_version = 8
    return m


def _save(model, tmp_path, name="m.onnx"):
    p = tmp_path / name
    onnx.save(model, str(p))
    return p


def _fin(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_ops_tables_are_data():
    v82, ops82 = ops_table_for("8.2.1")
    v10, ops10 = ops_table_for("10.3")
    assert v82 == "8.2" and v10 == "10"
    assert {"Conv", "Sigmoid", "Mul", "Reshape", "Concat", "Resize"} <= ops82
    assert "NonZero" not in ops82 and "NonZero" in ops10
    assert ops_table_for("7.1.3") == (None, None)


def test_preflight_unsupported_operator(tmp_path):
    m = _model(
        [helper.make_node("NonZero", ["x"], ["y"], name="where_are_boxes")],
        [_fin("x", [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
    )
    p = _save(m, tmp_path)
    with pytest.raises(TrtflowError) as e:
        preflight(p, tmp_path / "r.json", "8.2.1", target="nano")
    msg = str(e.value)
    assert "'where_are_boxes' (NonZero)" in msg and "TensorRT 8.2.1" in msg
    assert "add patch sanitize" in msg and "target 'nano'" in msg
    assert not (tmp_path / "r.json").exists()
    assert preflight(p, tmp_path / "r10.json", "10.3", target="orin")["ok"]


def test_preflight_int64_initializer(tmp_path):
    big = numpy_helper.from_array(np.array([2**40], dtype=np.int64), "offset")
    ends = numpy_helper.from_array(np.array([2**63 - 1], dtype=np.int64), "ends")
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "starts")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"], name="slice_all"),
        helper.make_node("Add", ["i", "offset"], ["j"], name="add_offset"),
    ]
    i64 = helper.make_tensor_value_info
    m = _model(
        nodes,
        [_fin("x", [1, 4]), i64("i", TensorProto.INT64, [1])],
        [_fin("s", [1, 4]), i64("j", TensorProto.INT64, [1])],
        [big, ends, starts, axes],
    )
    p = _save(m, tmp_path)
    with pytest.raises(TrtflowError) as e:
        preflight(p, None, "8.2.1")
    msg = str(e.value)
    assert "'add_offset' (Add)" in msg and "beyond INT32" in msg
    assert "int64_to_int32" in msg
    # the Slice "to the end" sentinel is only a warning; TensorRT 10 has INT64 natively
    assert "slice_all" not in msg
    assert preflight(p, None, "10.3")["ok"]


def test_preflight_efficient_nms_on_trt7(tmp_path):
    nms = helper.make_node(
        "EfficientNMS_TRT",
        ["boxes", "scores"],
        ["num", "det_boxes"],
        name="nms",
        domain="trt.plugins",
    )
    m = _model(
        [nms],
        [_fin("boxes", [1, 10, 4]), _fin("scores", [1, 10, 2])],
        [
            helper.make_tensor_value_info("num", TensorProto.INT32, [1, 1]),
            _fin("det_boxes", [1, 5, 4]),
        ],
        domains=["trt.plugins"],
    )
    p = _save(m, tmp_path)
    with pytest.raises(TrtflowError) as e:
        preflight(p, None, "7.1.3", target="tx2")
    msg = str(e.value)
    assert "'nms' (EfficientNMS_TRT)" in msg and ">= 8.0.1" in msg
    assert "remove patch efficient_nms" in msg
    assert preflight(p, None, "8.2.1")["ok"]


def test_preflight_batch_pinning_reshape(tmp_path):
    shape = numpy_helper.from_array(np.array([1, -1, 8], dtype=np.int64), "shape")
    m = _model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="head/reshape")],
        [_fin("x", ["batch", 8, 4, 4])],
        [_fin("y", ["batch", 16, 8])],
        [shape],
    )
    p = _save(m, tmp_path)
    with pytest.raises(TrtflowError) as e:
        preflight(p, None, "10.3", dynamic=True)
    msg = str(e.value)
    assert "'head/reshape' (Reshape)" in msg and "pins the batch to 1" in msg
    assert "fix_batch" in msg
    assert preflight(p, None, "10.3", dynamic=False)["ok"]


def test_preflight_fixed_batch_input_under_dynamic_profile(tmp_path):
    p = tiny_patched_onnx(tmp_path / "m.onnx", batch=1)
    with pytest.raises(TrtflowError, match="fixed batch 1.*fix_batch"):
        preflight(p, None, "10.3", dynamic=True)


def test_preflight_report(tmp_path):
    p = tiny_patched_onnx(tmp_path / "m.onnx")
    r = preflight(p, tmp_path / "r.json", "8.2.1", target="nano", dynamic=True)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["ok"] and saved["ops_table"] == "8.2"
    images = {"name": "images", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    assert saved["inputs"] == [images]
    assert r["findings"][0]["check"] == "int64"  # the Reshape's INT64 shape: a warning on 8.2


# ---------------------------------------------------------------- the trtexec stand-in


def _standin(version: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, "TRTFLOW_STANDIN_TRT": version, **env}
    return subprocess.run(
        [sys.executable, str(STANDIN), *args],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("version", "flag"),
    [
        ("10.3.0", "--workspace=1024"),
        ("10.3.0", "--explicitBatch"),
        ("10.3.0", "--buildOnly"),
        ("10.3.0", "--nvtxMode=verbose"),
        ("10.3.0", "--uff=m.uff"),
        ("10.3.0", "--deploy=m.prototxt"),
        ("8.2.1", "--memPoolSize=workspace:1024M"),
        ("8.2.1", "--skipInference"),
    ],
)
def test_standin_rejects_flags_of_other_versions(tmp_path, version, flag):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    r = _standin(version, f"--onnx={onnx_path}", "--saveEngine=e.engine", flag, cwd=tmp_path)
    assert r.returncode == 1
    assert f"Unknown option: {flag}" in r.stdout
    assert "&&&& FAILED TensorRT.trtexec" in r.stdout
    assert not (tmp_path / "e.engine").exists()


def test_standin_accepts_trtflow_argv_and_ties_engine_to_version(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    for version in ("8.2.1", "10.3.0"):
        argv = _build(version, onnx=str(onnx_path), engine=f"{version}.engine")[1:]
        r = _standin(version, *argv, cwd=tmp_path)
        assert r.returncode == 0, r.stdout
        assert (tmp_path / f"{version}.engine").read_bytes().startswith(b"TRTFLOW-STANDIN-ENGINE")
    r = _standin("10.3.0", "--loadEngine=8.2.1.engine", cwd=tmp_path)
    assert r.returncode == 1 and "not compatible with this version of TensorRT" in r.stdout


# ---------------------------------------------------------------- local targets: failures


def _spec(trtexec_path: Path | str, version: str = "10.3", **kw: object) -> dict:
    return {
        "transport": "local",
        "trtexec": str(trtexec_path),
        "tensorrt": version,
        "device": "STAND-IN GPU",
        "precisions": ["fp32", "fp16"],
        **kw,
    }


def test_no_tensorrt_here_names_the_target(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    assert shutil.which("trtexec") is None, "this test assumes a host without TensorRT"
    with pytest.raises(TrtflowError) as e:
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="my-gpu",
            spec=_spec("trtexec"),
            precision="fp16",
            profile="b1",
            image_size=32,
        )
    msg = str(e.value)
    assert "target 'my-gpu'" in msg and "TensorRT is not installed here" in msg
    assert "transport: ssh" in msg and "targets:" in msg
    with pytest.raises(TrtflowError, match="target 'py'.*Python bindings are not installed"):
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="py",
            spec=_spec("trtexec", backend="python"),
            precision="fp16",
            profile="b1",
            image_size=32,
        )


def test_int8_without_calibration_and_unsupported_precision(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    spec = _spec(make_trtexec(tmp_path / "bin", "10.3.0"), precisions=["fp16", "int8"])
    with pytest.raises(TrtflowError, match="needs a calibration cache or a Q/DQ ONNX"):
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="t",
            spec=spec,
            precision="int8",
            profile="b1",
            image_size=32,
        )
    with pytest.raises(TrtflowError, match="does not support precision fp32"):
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="t",
            spec=spec,
            precision="fp32",
            profile="b1",
            image_size=32,
        )


def test_int8_with_calibration_cache(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-8201-EntropyCalibration2\n")
    spec = _spec(
        make_trtexec(tmp_path / "bin", "8.2.1"), version="8.2.1", precisions=["fp16", "int8"]
    )
    m = build_engine(
        onnx_path,
        tmp_path / "e.engine",
        target="t",
        spec=spec,
        precision="int8",
        profile="b1",
        image_size=32,
        calibration_cache=cache,
    )
    assert "--int8" in m["options"]["flags"] and "--calib=calib.cache" in m["options"]["flags"]
    assert m["inputs"]["calibration_cache"]["path"] == str(cache)


@pytest.mark.parametrize(
    ("fail", "expect"),
    [
        ("parse", r"failed \(trtexec exit 1\):.*Failed to parse onnx file"),
        ("oom", r"ran out of device memory:.*OutOfMemory.*fix: lower targets\.t\.workspace_mib"),
    ],
)
def test_trtexec_failure_gives_device_message_and_no_engine(tmp_path, fail, expect):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    spec = _spec(make_trtexec(tmp_path / "bin", "10.3.0", fail=fail))
    engine = tmp_path / "out" / "e.engine"
    with pytest.raises(TrtflowError, match=expect):
        build_engine(
            onnx_path, engine, target="t", spec=spec, precision="fp16", profile="b1", image_size=32
        )
    assert not engine.exists() and not list(engine.parent.glob(".*tmp*"))


def test_declared_version_is_probed(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    spec = _spec(make_trtexec(tmp_path / "bin", "10.3.0"), version="10.2")
    with pytest.raises(
        TrtflowError,
        match=r"declares TensorRT 10\.2 but its trtexec reports "
        r"10\.3\.0.*tensorrt: \"10\.3\.0\"",
    ):
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="t",
            spec=spec,
            precision="fp16",
            profile="b1",
            image_size=32,
        )
    assert not (tmp_path / "e.engine").exists()


def test_local_build_benchmark_parity_with_standin(tmp_path):
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    spec = _spec(make_trtexec(tmp_path / "bin", "10.3.0"))
    engine = tmp_path / "e.engine"
    cache = tmp_path / "timing.cache"
    m = build_engine(
        onnx_path,
        engine,
        target="t",
        spec=spec,
        precision="fp16",
        profile="b1-2-4",
        image_size=32,
        timing_cache=cache,
    )
    assert m["standin"] and m["tensorrt"] == {"declared": "10.3", "probed": "10.3.0"}
    assert m["inputs"]["onnx"]["sha256"] == m["onnx_sha256"]
    device_line = m["work_dir_command"]  # what ran on the device; "command" reproduces the engine
    assert device_line[0] == str(spec["trtexec"]) and "--memPoolSize" in " ".join(device_line)
    assert m["command"].startswith("trtflow build-engine --onnx")
    assert cache.read_bytes().startswith(b"TRTFLOW-STANDIN-TIMING-CACHE")
    man = Path(f"{engine}.manifest.json")
    b = benchmark_engine(
        engine, man, tmp_path / "b.json", target="t", spec=spec, iterations=12, use_cuda_graph=True
    )
    assert b["standin"] and "TEST STAND-IN" in b["note"] and b["batch"] == 2
    assert b["iterations"] == 12 and "--useCudaGraph" in b["command"]
    assert b["host_latency"]["p50_ms"] > b["gpu_compute"]["p50_ms"]
    assert b["layers"]["profiled_iterations"] == 12
    p = check_engine_parity(
        engine,
        man,
        onnx_path,
        tmp_path / "p.json",
        target="t",
        spec=spec,
        tolerance={"fp16": {"atol": 0.5, "rtol": 0.02}},
    )
    assert p["ok"] and p["standin"] and p["outputs"]["output0"]["elements"] == 2 * 32 * 32 * 8


# ---------------------------------------------------------------- mypy against tensorrt-stubs


def _stubs_copy(dest: Path) -> Path | None:
    """tensorrt-stubs 10.13 as mypy can read them: the package ships no py.typed and a few
    syntax errors (parameters named ``in``, a default before a non-default); copy and fix."""
    from importlib import metadata

    try:
        files = metadata.files("tensorrt-stubs") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.suffix == ".pyi":
            src = Path(f.locate())
            out = dest / f
            out.parent.mkdir(parents=True, exist_ok=True)
            text = re.sub(r"\bin: ", "in_: ", src.read_text())
            text = text.replace(
                "channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer"
            )
            out.write_text(text)
    return dest


def test_trt_python_is_mypy_clean_against_tensorrt_stubs(tmp_path):
    pytest.importorskip("mypy")
    stubs = _stubs_copy(tmp_path / "stubs")
    if stubs is None:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    ini = tmp_path / "mypy.ini"
    ini.write_text(
        "[mypy]\nignore_missing_imports = True\ncache_dir = "
        + str(tmp_path / "c")
        + "\n[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "ignore_errors = True\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ini),
            "--strict",
            "trtflow/trt/python_api.py",
        ],
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(stubs)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # the stubs really were used: a wrong call into the 10.x API is caught
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import tensorrt as trt\n\ndef f(e: trt.ICudaEngine) -> str:\n"
        "    return e.get_tensor_name('x')\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ini), str(bad)],
        env={**os.environ, "MYPYPATH": str(stubs)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and "get_tensor_name" in r.stdout


# ---------------------------------------------------------------- CLI


def test_cli_engine_commands(tmp_path):
    import yaml

    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    config = {
        "models": {"tiny": {}},
        "targets": {"t": _spec(make_trtexec(tmp_path / "b", "8.2.1"), version="8.2.1")},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = [sys.executable, "-m", "trtflow"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run, *args], cwd=REPO, capture_output=True, text=True, check=False)

    r = cli("preflight", "--onnx", str(onnx_path), "--tensorrt", "8.2.1", "--dynamic")
    assert r.returncode == 0, r.stderr
    # with --out, the report records the line that writes it again
    from conftest import reproduce_report

    pre = tmp_path / "pre" / "preflight.json"
    r = cli("preflight", "--onnx", str(onnx_path), "--tensorrt", "8.2.1", "--out", str(pre))
    assert r.returncode == 0, r.stderr
    reproduce_report(REPO, pre, tmp_path / "again", ("ok", "findings", "onnx_sha256"))
    engine = tmp_path / "e.engine"
    r = cli(
        "build-engine",
        "--config",
        str(tmp_path / "c.yaml"),
        "--target",
        "t",
        "--onnx",
        str(onnx_path),
        "--out",
        str(engine),
        "--profile",
        "b1-2-4",
        "--image-size",
        "32",
    )
    assert r.returncode == 0, r.stderr
    # the manifest's command reproduces the engine (the stand-in's fake plan is deterministic)
    man = json.loads(Path(f"{engine}.manifest.json").read_text())
    argv = shlex.split(man["command"])
    assert argv[:2] == ["trtflow", "build-engine"]
    assert argv[argv.index("--config") + 1 :][:1] == [str(tmp_path / "c.yaml")]
    for flag, value in (("--target", "t"), ("--precision", "fp16"), ("--image-size", "32")):
        assert argv[argv.index(flag) + 1] == value
    argv[argv.index("--out") + 1] = str(tmp_path / "again.engine")
    r = cli(*argv[1:])
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "again.engine.manifest.json").read_text())
    assert again["sha256"] == man["sha256"] and again["options"] == man["options"]
    r = cli(
        "benchmark-engine",
        "--config",
        str(tmp_path / "c.yaml"),
        "--target",
        "t",
        "--engine",
        str(engine),
        "--out",
        str(tmp_path / "b.json"),
        "--iterations",
        "5",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b.json").read_text())["standin"] is True
    r = cli(
        "build-engine",
        "--config",
        str(tmp_path / "c.yaml"),
        "--target",
        "nope",
        "--onnx",
        str(onnx_path),
        "--out",
        str(engine),
        "--image-size",
        "32",
    )
    assert r.returncode == 1 and "unknown target 'nope' (configured: t)" in r.stderr


def test_cli_config_overrides_are_applied_and_recorded(tmp_path, monkeypatch):
    """``--config file KEY=VALUE``: the override (Snakemake's ``--config``, which the workflow
    publishes to its jobs) is merged over the file, and the manifest's command carries it, so
    the command reproduces an engine whose target was set on the command line."""
    import yaml

    from trtflow.core.config import publish_config_files, published_config_files

    monkeypatch.delenv("TRTFLOW_CONFIG_FILES", raising=False)
    publish_config_files(["config.yaml", "more.yaml"], {"targets": {"t": {"trtexec": "/x y"}}})
    assert published_config_files() == [
        "config.yaml", "more.yaml", 'targets={"t": {"trtexec": "/x y"}}']  # fmt: skip
    onnx_path = tiny_patched_onnx(tmp_path / "m.onnx")
    real = make_trtexec(tmp_path / "b", "8.2.1")
    spec = _spec(tmp_path / "missing" / "trtexec", version="8.2.1")
    config = {"models": {"tiny": {}}, "targets": {"t": spec}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    override = "targets=" + json.dumps({"t": {"trtexec": str(real)}})
    engine = tmp_path / "e.engine"
    common = ["--target", "t", "--onnx", str(onnx_path), "--image-size", "32"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trtflow", *args], cwd=REPO,
                              capture_output=True, text=True, check=False)  # fmt: skip

    r = cli("build-engine", "--config", str(tmp_path / "c.yaml"), *common, "--out", str(engine))
    assert r.returncode == 1 and "missing" in r.stderr  # the file alone names no trtexec there
    r = cli("build-engine", "--config", str(tmp_path / "c.yaml"), override, *common,
            "--out", str(engine))  # fmt: skip
    assert r.returncode == 0, r.stderr
    man = json.loads(Path(f"{engine}.manifest.json").read_text())
    argv = shlex.split(man["command"])
    i = argv.index("--config")
    assert argv[i + 1 : i + 3] == [str(tmp_path / "c.yaml"), override]
    argv[argv.index("--out") + 1] = str(tmp_path / "again.engine")
    r = cli(*argv[1:])
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "again.engine.manifest.json").read_text())
    assert again["sha256"] == man["sha256"]
    r = cli("build-engine", "--config", str(tmp_path / "c.yaml"), "targets={t: [", *common,
            "--out", str(tmp_path / "bad.engine"))  # fmt: skip
    assert r.returncode == 1 and "not valid JSON or YAML" in r.stderr
    assert not (tmp_path / "bad.engine").exists()


def test_config_example_targets_validate():
    """The commented target examples of config.yaml are valid once uncommented."""
    import yaml

    from trtflow.core.config import validate_config

    text = (REPO / "config.yaml").read_text()
    block = text[text.index("\ntargets:") : text.index("\nengine:")]
    lines = [ln.replace("  # ", "  ", 1) for ln in block.splitlines() if ln.startswith("  # ")]
    config = yaml.safe_load(text)
    assert set(config["targets"]) == {"rtx"}  # the one enabled: TensorRT-RTX, ahead of time
    assert config["targets"]["rtx"]["backend"] == "tensorrt-rtx"
    config["targets"].update(yaml.safe_load("\n".join(lines[1:])))
    targets = validate_config(config)["targets"]
    assert targets["jetson-nano"]["transport"] == "ssh"
    assert "int8" not in targets["jetson-nano"]["precisions"]
    assert targets["workstation"]["transport"] == "local"


# ---------------------------------------------------------------- Target and backends


def _target_schema() -> dict:
    from trtflow.core.config import load_schema

    return load_schema()["properties"]["targets"]["additionalProperties"]


def test_target_defaults_come_from_the_schema_and_it_is_frozen():
    import dataclasses

    from trtflow.trt.targets import Target

    t = Target.of("t", {"tensorrt": "10.3", "device": "GPU"})
    defaults = {
        k: p["default"] for k, p in _target_schema()["properties"].items() if "default" in p
    }
    assert defaults, "the schema gives target defaults"
    for key, default in defaults.items():
        value = getattr(t, key)
        assert (list(value) if isinstance(value, tuple) else value) == default, key
    assert t.name == "t" and t.compute_capabilities == () and not t.is_rtx and t.is_local
    # every field the stages read is a schema key (or the name): nothing invented here
    names = {f.name for f in dataclasses.fields(Target)} - {"name"}
    assert names == set(_target_schema()["properties"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.workspace_mib = 1  # type: ignore[misc]
    # given values win; a validated entry gives the same Target (defaults applied once)
    ssh = Target.of("n", {"tensorrt": "8.2.1", "device": "X1", "transport": "ssh", "host": "nano",
                          "precisions": ["fp16"], "workspace_mib": 512})  # fmt: skip
    assert (ssh.transport, ssh.host, ssh.precisions, ssh.workspace_mib, ssh.port) == (
        "ssh", "nano", ("fp16",), 512, 22)  # fmt: skip
    from trtflow.core.config import validate_target

    spec = {"tensorrt": "8.2.1", "device": "X1", "transport": "ssh", "host": "nano"}
    assert Target.of("n", validate_target("n", spec)) == Target.of("n", spec)


def test_target_entry_is_validated():
    from trtflow.trt.targets import Target

    with pytest.raises(TrtflowError, match=r"targets\.t.*unknown key 'workspace'"):
        Target.of("t", {"tensorrt": "10.3", "device": "GPU", "workspace": 64})
    with pytest.raises(TrtflowError, match=r"targets\.r.*compute_capabilities"):
        Target.of("r", {"tensorrt": "1.7.1", "device": "RTX", "backend": "tensorrt-rtx"})
    with pytest.raises(TrtflowError, match="unknown target 'x' \\(configured: t\\)"):
        Target.from_config({"t": {"tensorrt": "10.3", "device": "GPU"}}, "x")


def test_target_derived_facts():
    from trtflow.trt.targets import Target

    rtx = Target.of("r", {"tensorrt": "1.7.1", "device": "RTX", "backend": "tensorrt-rtx",
                          "compute_capabilities": ["8.6", "8.9"]})  # fmt: skip
    nano = Target.of("n", {"tensorrt": "8.2.1", "device": "X1"})
    orin = Target.of("o", {"tensorrt": "10.3", "device": "Orin", "dla_core": 0})
    assert rtx.is_rtx and rtx.int8_from_qdq and rtx.fp16_from_onnx
    assert not nano.int8_from_qdq and orin.int8_from_qdq and not orin.fp16_from_onnx
    assert nano.generation.major == 8 and orin.generation.major == 10
    assert not rtx.runs_here(frozenset()) and rtx.runs_here(frozenset({"8.9"}))
    assert not rtx.runs_here(frozenset({"9.0"})) and nano.runs_here(frozenset())
    assert rtx.build_relevant()["compute_capabilities"] == ["8.6", "8.9"]
    assert orin.build_relevant() == {"tensorrt": "10.3", "device": "Orin", "backend": "trtexec",
                                     "workspace_mib": 1024, "dla_core": 0}  # fmt: skip
    with pytest.raises(TrtflowError, match="target 'r'.*not in trtflow's version table"):
        rtx.generation  # noqa: B018 - TensorRT-RTX has no trtexec row


def test_backend_for_looks_the_backend_up_by_name():
    from trtflow.trt.backends import (
        BACKENDS,
        PythonBackend,
        RtxBackend,
        TrtexecBackend,
        backend_class,
        backend_for,
    )
    from trtflow.trt.targets import Target

    enum = _target_schema()["properties"]["backend"]["enum"]
    assert list(BACKENDS) == enum  # one backend per name the schema allows
    expected = {"trtexec": TrtexecBackend, "python": PythonBackend, "tensorrt-rtx": RtxBackend}
    for name, cls in expected.items():
        spec = {
            "tensorrt": "10.3",
            "device": "GPU",
            "backend": name,
            "compute_capabilities": ["8.6"],
        }
        b = backend_for(Target.of("t", spec))
        assert type(b) is cls and b.name == name and b.target.backend == name
    assert (TrtexecBackend.library, RtxBackend.library) == ("TensorRT", "TensorRT-RTX")
    with pytest.raises(TrtflowError, match="unknown backend 'tensorrt-llm'.*use one of: trtexec"):
        backend_class("tensorrt-llm")
    # a Python-API backend runs on this host only: every stage refuses an ssh target the same way
    ssh = {
        "tensorrt": "10.3",
        "device": "GPU",
        "transport": "ssh",
        "host": "h",
        "backend": "python",
    }
    with pytest.raises(TrtflowError, match="target 's': backend python runs on this host only"):
        backend_for(Target.of("s", ssh)).check_available()
    backend_for(Target.of("s", {**ssh, "backend": "trtexec"})).check_available()  # the device's


def test_rtx_backend_picks_the_onnx_of_the_precision(tmp_path):
    from trtflow.trt.backends import backend_for
    from trtflow.trt.targets import Target

    spec = {"tensorrt": "1.7.1", "device": "RTX", "backend": "tensorrt-rtx",
            "compute_capabilities": ["8.6"]}  # fmt: skip
    rtx, trt = backend_for(Target.of("r", spec)), backend_for(Target.of("t", _spec("trtexec")))
    assert rtx.source_onnx("p.onnx", "fp16", fp16_onnx="h.onnx") == Path("h.onnx")
    assert rtx.source_onnx("p.onnx", "int8", qdq_onnx="q.onnx") == Path("q.onnx")
    assert trt.source_onnx("p.onnx", "fp16", fp16_onnx="h.onnx") == Path("p.onnx")
    with pytest.raises(TrtflowError, match="needs an fp16 ONNX"):
        rtx.source_onnx("p.onnx", "fp16")
    with pytest.raises(TrtflowError, match="cannot build precision best"):
        rtx.source_onnx("p.onnx", "best")


def test_version_facts_come_from_the_table():
    from types import SimpleNamespace

    from trtflow.trt.calibration_cache import trt_version_code
    from trtflow.trt.python_api import api_generation
    from trtflow.trt.targets import nearest_generation, opset_ceiling, version_code

    assert [nearest_generation(v).major for v in ("7.1.3", "8.6.1", "9.0", "10.3", "11.0")] == [
        8, 8, 8, 10, 10]  # fmt: skip
    assert version_code("7.1.3") == trt_version_code("7.1.3") == 7103
    assert version_from_tag(version_tag("8.6.1")) == "8.6.1"
    assert [opset_ceiling(v) for v in ("7.1.3", "8.2.1", "10.3")] == [11, 13, 20]
    fake = SimpleNamespace
    assert api_generation(fake(__name__="tensorrt", __version__="8.2.1")) == "bindings"
    assert api_generation(fake(__name__="tensorrt", __version__="10.3.0")) == "tensors"
    assert api_generation(fake(__name__="tensorrt_rtx", __version__="1.7.1")) == "tensors"


def test_every_version_table_field_is_read():
    """A field of TrtGeneration that no code reads is a fact kept by hand for nothing."""
    import dataclasses

    from trtflow.trt.targets import TrtGeneration

    files = [*(REPO / "trtflow").rglob("*.py"), *(REPO / "tests").glob("test_*.py")]
    code = "\n".join(p.read_text(encoding="utf-8") for p in files)  # the table writes `name=`
    unread = [f.name for f in dataclasses.fields(TrtGeneration)
              if f.name != "major" and f".{f.name}" not in code]  # fmt: skip
    assert not unread, f"GENERATIONS fields nothing reads: {unread}"
