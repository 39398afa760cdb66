"""TensorRT-RTX in the loop: the nearest_resize patch, the real parser in preflight, real builds.

The tf2onnx conversion of the builtin YOLOv5n (64x64) is made once per module; the parser and
the ahead-of-time builder of TensorRT-RTX run on this CPU-only host. Tests that need the wheel
are skipped (with the reason) where it is not installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtflow.core.config import default_recipe
from trtflow.onnx.patches.registry import PatchOptions, apply_patches
from trtflow.trt import rtx

SIZE = 64
RESIZE_MESSAGE = (
    'UNSUPPORTED_NODE: (transformationMode != "tf_half_pixel_for_nn" || nearest_mode == '
    '"round_prefer_floor") && "This version of TensorRT only support round_prefer_floor '
    'nearest mode in tf_half_pixel_for_nn!"'
)
needs_rtx = pytest.mark.skipif(not rtx.available(), reason="tensorrt-rtx is not installed")


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """tf2onnx's ONNX of the builtin yolov5n at 64, and the default recipe with / without
    nearest_resize (paths)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    from trtflow.tf.yolov5 import build_yolov5

    out = tmp_path_factory.mktemp("rtx")
    keras_model = build_yolov5("n", 2, SIZE)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="images"),)
    raw, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    options = PatchOptions(image_size=SIZE)
    without = [p for p in default_recipe() if p != "nearest_resize"]
    paths = {"raw": out / "raw.onnx", "unpatched": out / "without.onnx", "patched": out / "p.onnx"}
    onnx.save(raw, str(paths["raw"]))
    onnx.save(apply_patches(raw, without, options)[0], str(paths["unpatched"]))
    patched, report = apply_patches(raw, default_recipe(), options)
    onnx.save(patched, str(paths["patched"]))
    step = next(r for r in report if r["name"] == "nearest_resize")
    assert len(step["changes"]) == 2, step  # the builtin model's two 2x upsamples
    return paths


# ---------------------------------------------------------------- nearest_resize


def _resize_model(mode: str, nearest: str, scales: list[float] | None, sizes=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    inputs = ["x", "roi"]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        inputs.append("scales")
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        inputs += ["", "sizes"]
    node = helper.make_node(
        "Resize", inputs, ["y"], name="up", mode="nearest",
        coordinate_transformation_mode=mode, nearest_mode=nearest,
    )  # fmt: skip
    graph = helper.make_graph([node], "resize", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _attrs(model: onnx.ModelProto) -> dict:
    node = next(n for n in model.graph.node if n.op_type == "Resize")
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize(
    "scales,sizes",
    [([1, 1, 2, 2], None), ([1, 1, 3, 2], None), ([1, 1, 1, 4], None), (None, [1, 2, 10, 21])],
)
def test_nearest_resize_integer_scales_are_bit_identical(scales, sizes):
    model = _resize_model("tf_half_pixel_for_nn", "floor", scales, sizes)
    patched, report = apply_patches(model, ["nearest_resize"], PatchOptions(image_size=32))
    assert _attrs(patched)["coordinate_transformation_mode"] == b"asymmetric"
    assert _attrs(patched)["nearest_mode"] == b"floor"
    assert len(report[0]["changes"]) == 1
    x = np.random.default_rng(0).random((1, 2, 5, 7), dtype=np.float32)
    (a,), (b,) = run(model, x), run(patched, x)
    assert a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize(
    "mode,nearest,scales",
    [
        ("tf_half_pixel_for_nn", "floor", [1, 1, 1.5, 2]),  # not an integer scale
        ("tf_half_pixel_for_nn", "round_prefer_ceil", [1, 1, 2, 2]),  # another rounding
        ("half_pixel", "floor", [1, 1, 2, 2]),  # another coordinate mode
    ],
)
def test_nearest_resize_leaves_other_resizes_alone(mode, nearest, scales, caplog):
    model = _resize_model(mode, nearest, scales)
    with caplog.at_level("INFO", logger="trtflow.onnx.patches"):
        patched, report = apply_patches(model, ["nearest_resize"], PatchOptions(image_size=32))
    assert _attrs(patched) == _attrs(model) and report[0]["changes"] == []
    assert "Resize 'up'" in caplog.text and "left as is" in caplog.text


def test_nearest_resize_on_real_tf2onnx_output_is_bit_identical(converted):
    raw, without, patched = (onnx.load(str(converted[k])) for k in ("raw", "unpatched", "patched"))
    modes = {_attrs_of(n)["coordinate_transformation_mode"] for n in _resizes(raw)}
    assert modes == {b"tf_half_pixel_for_nn"}  # what tf2onnx writes for a nearest upsample
    assert {_attrs_of(n)["coordinate_transformation_mode"] for n in _resizes(patched)} == {
        b"asymmetric"
    }
    x = np.random.default_rng(3).random((2, 3, SIZE, SIZE), dtype=np.float32)
    (a,), (b,) = run(without, x), run(patched, x)
    assert np.array_equal(a, b)


def _resizes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Resize"]


def _attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@needs_rtx
def test_real_parser_rejects_tf2onnx_resize_and_accepts_the_patched_model(converted):
    errors = rtx.parse_onnx(converted["unpatched"])
    assert len(errors) == 2 and {e.op for e in errors} == {"Resize"}
    for e in errors:
        assert e.code == "UNSUPPORTED_NODE"
        assert e.message.startswith(f"In node {e.node} with name: {e.name} and operator: Resize")
        assert e.message.endswith(f"(checkResize): {RESIZE_MESSAGE}")
    assert rtx.parse_onnx(converted["raw"])  # tf2onnx's own output too
    assert rtx.parse_onnx(converted["patched"]) == []


# ---------------------------------------------------------------- real-parser preflight


@needs_rtx
@pytest.mark.parametrize("backend,tensorrt", [("tensorrt-rtx", "1.7.1"), ("trtexec", "10.3")])
def test_preflight_fails_with_the_parsers_words_and_the_fixing_patch(
    converted, tmp_path, backend, tensorrt
):
    from trtflow.core.errors import TrtflowError
    from trtflow.stages.engine import preflight

    out = tmp_path / "preflight.json"
    with pytest.raises(TrtflowError) as err:
        preflight(converted["unpatched"], out, tensorrt, target="t", dynamic=True,
                  backend=backend)  # fmt: skip
    msg = str(err.value)
    assert f"preflight of {converted['unpatched']} for target 't'" in msg
    # tf2onnx numbers nodes per process (Resize__166 in a fresh one): match any number
    assert re.search(r"node 'Resize__\d+' \(Resize\): In node", msg) and RESIZE_MESSAGE in msg
    assert "(+1 more, see the log)" in msg  # the second upsample
    assert msg.endswith("fix: add patch nearest_resize to models.<name>.patches")
    assert not out.exists()  # no half-written report
    report = preflight(converted["patched"], out, tensorrt, target="t", dynamic=True,
                       backend=backend, sources=[converted["patched"]])  # fmt: skip
    assert report["ok"] and report["parser"]["library"].startswith("tensorrt-rtx 1.7.1")
    assert [f for f in report["findings"] if f["check"] == "parser"] == []
    assert out.is_file()


@needs_rtx
def test_preflight_parses_every_source_and_names_the_file(converted, tmp_path):
    from trtflow.core.errors import TrtflowError
    from trtflow.stages.engine import preflight

    with pytest.raises(TrtflowError, match=r"preflight of .*without\.onnx .* nearest_resize"):
        preflight(converted["patched"], None, "1.7.1", backend="tensorrt-rtx",
                  sources=[converted["unpatched"]])  # fmt: skip


@needs_rtx
def test_preflight_plugin_nodes_on_rtx_and_on_tensorrt_10(tmp_path):
    from tests import onnx_factory as factory
    from trtflow.core.errors import TrtflowError
    from trtflow.stages.engine import preflight

    model, _ = apply_patches(
        factory.tiny_detector(num_classes=2, size=32),
        [*[p for p in default_recipe() if p != "fold_decode"], "efficient_nms"],
        PatchOptions(image_size=32),
    )
    path = tmp_path / "nms.onnx"
    onnx.save(model, str(path))
    with pytest.raises(TrtflowError) as err:
        preflight(path, None, "1.7.1", backend="tensorrt-rtx")
    assert "(EfficientNMS_TRT): In node" in str(err.value)
    assert "Plugin not found" in str(err.value)
    assert str(err.value).endswith("fix: remove patch efficient_nms from models.<name>.patches "
                                   "(TensorRT-RTX ships no plugins)")  # fmt: skip
    report = preflight(path, None, "10.3")  # TensorRT 10 ships the plugin: the table says so
    assert report["ok"] and report["parser"] is not None


# ---------------------------------------------------------------- the stand-in parses for real


@needs_rtx
def test_standin_trtexec_refuses_what_the_real_parser_rejects(converted, tmp_path):
    import subprocess
    import sys

    from tests.engine_support import STANDIN

    def standin(onnx_path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(STANDIN), f"--onnx={onnx_path}",
             f"--saveEngine={tmp_path / 'e.engine'}", "--skipInference"],
            env={**os.environ, "TRTFLOW_STANDIN_TRT": "10.3.0"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    r = standin(converted["unpatched"])
    assert r.returncode == 1 and RESIZE_MESSAGE in r.stdout and "Parsing model failed" in r.stdout
    assert not (tmp_path / "e.engine").exists()
    r = standin(converted["patched"])
    assert r.returncode == 0 and "real TensorRT-RTX" in r.stdout, r.stdout


# ---------------------------------------------------------------- real builds (TensorRT-RTX)

RTX_SPEC = {
    "backend": "tensorrt-rtx",
    "transport": "local",
    "tensorrt": "1.7.1",
    "device": "NVIDIA RTX (ahead of time)",
    "compute_capabilities": ["8.6"],
    "precisions": ["fp32", "fp16", "int8"],
    "workspace_mib": 256,
}


def _make_variant(name: str, tmp_path_factory) -> dict[str, Path]:
    """Builtin yolov5<name> at 64: tf2onnx -> patched (dynamic and batch 2) -> fp16, Q/DQ."""
    if not rtx.available():
        pytest.skip("tensorrt-rtx is not installed")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    from trtflow.stages.fp16 import convert_onnx_to_fp16
    from trtflow.stages.quantize import quantize_onnx
    from trtflow.tf.yolov5 import build_yolov5

    out = tmp_path_factory.mktemp(f"yolov5{name}")
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="images"),)
    raw, _ = tf2onnx.convert.from_keras(build_yolov5(name, 2, SIZE), input_signature=spec, opset=17)
    paths = {"raw": out / "raw.onnx", "patched": out / "patched.onnx",
             "static": out / "static.onnx", "fp16": out / "fp16.onnx",
             "qdq": out / "qdq.onnx"}  # fmt: skip
    onnx.save(raw, str(paths["raw"]))
    for key, batch in (("patched", "dynamic"), ("static", 2)):
        patched, _ = apply_patches(raw, default_recipe(), PatchOptions(SIZE, batch=batch))
        onnx.save(patched, str(paths[key]))
    convert_onnx_to_fp16(paths["patched"], paths["fp16"])
    calib = out / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((4, 3, SIZE, SIZE), dtype=np.float32))
    quantize_onnx(paths["patched"], calib, paths["qdq"], out / "ranges.json")
    return {**paths, "dir": out}


@pytest.fixture(scope="module", params=["n", "s"])
def variant(request, tmp_path_factory) -> dict[str, Path]:
    return _make_variant(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=["m", "l", "x"])
def large_variant(request, tmp_path_factory) -> dict[str, Path]:
    return _make_variant(request.param, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TRTFLOW_ALL_VARIANTS"),
    reason="set TRTFLOW_ALL_VARIANTS=1 to build m/l/x (yolov5x's build takes > 20 GB in-process)",
)
def test_large_variants_parse_and_build(large_variant, tmp_path):
    """yolov5m/l/x: every ONNX parses; the dynamic fp32 and int8 engines build."""
    from trtflow.stages.engine import build_engine

    for key in ("patched", "static", "fp16", "qdq"):
        assert rtx.parse_onnx(large_variant[key]) == [], key
    for precision in ("fp32", "int8"):
        engine = tmp_path / f"{precision}.engine"
        build_engine(large_variant["patched"], engine, target="rtx", spec=RTX_SPEC,
                     precision=precision, profile="b1-2-4", image_size=SIZE,
                     qdq_onnx=large_variant["qdq"] if precision == "int8" else None)  # fmt: skip
        assert engine.stat().st_size > 1_000_000


@pytest.mark.parametrize("key", ["patched", "static", "fp16", "qdq"])
def test_every_onnx_of_the_variant_parses(variant, key):
    assert rtx.parse_onnx(variant[key]) == []


@pytest.mark.parametrize(
    "precision,profile,onnx_key",
    [
        ("fp32", "b1", "patched"),
        ("fp32", "b1-2-4", "patched"),
        ("fp16", "b1-2-4", "patched"),
        ("int8", "b1", "patched"),
        ("int8", "b1-2-4", "patched"),
        ("fp32", "b2", "static"),
    ],
)
def test_real_build(variant, precision, profile, onnx_key):
    from trtflow.core.manifest import read_json
    from trtflow.stages.engine import build_engine
    from trtflow.trt.backends import is_standin_engine

    engine = variant["dir"] / "engines" / f"{onnx_key}-{precision}-{profile}.engine"
    build_engine(
        variant[onnx_key],
        engine,
        target="rtx",
        spec=RTX_SPEC,
        precision=precision,
        profile=profile,
        image_size=SIZE,
        timing_cache=variant["dir"] / "timing.cache",
        qdq_onnx=variant["qdq"] if precision == "int8" else None,
        fp16_onnx=variant["fp16"] if precision == "fp16" else None,
    )
    assert engine.stat().st_size > 100_000 and not is_standin_engine(engine)
    man = read_json(f"{engine}.manifest.json")
    assert man["library"] == "tensorrt_rtx" and man["tensorrt"]["probed"].startswith("1.7.1")
    assert man["compute_capabilities"] == ["8.6"] and man["ahead_of_time"] is True
    built_from = {"int8": "qdq", "fp16": "fp16"}.get(precision, onnx_key)
    assert man["inputs"]["onnx"]["path"] == str(variant[built_from])
    assert man["command"].startswith("trtflow build-engine --onnx")
    assert " --target rtx " in man["command"] and f" --image-size {SIZE} " in man["command"]
    assert not (variant["dir"] / "timing.cache").exists()  # a no-op in TensorRT-RTX >= 1.2


def test_rtx_build_refuses_what_it_cannot_build(variant, tmp_path):
    from trtflow.core.errors import TrtflowError
    from trtflow.stages.engine import build_engine

    common = dict(target="rtx", spec=RTX_SPEC, profile="b1", image_size=SIZE)
    with pytest.raises(TrtflowError, match="needs an fp16 ONNX"):
        build_engine(variant["patched"], tmp_path / "e.engine", precision="fp16", **common)
    spec = {**RTX_SPEC, "precisions": ["best"]}
    with pytest.raises(TrtflowError, match="cannot build precision best: networks are strongly"):
        build_engine(variant["patched"], tmp_path / "e.engine", precision="best",
                     qdq_onnx=variant["qdq"], **{**common, "spec": spec})  # fmt: skip
    assert not (tmp_path / "e.engine").exists()


# ---------------------------------------------------------------- the DAG: run only where a GPU is


@pytest.mark.parametrize("gpu", [None, "8.6", "9.0"])
def test_rtx_engines_run_only_on_a_supported_gpu(workdir, gpu):
    """No nvidia-smi (or a Hopper GPU): built, not run; an RTX-class GPU: benchmark + parity."""
    import yaml

    from tests.conftest import tiny_config, tiny_model

    cfg = tiny_config(
        {"tiny": tiny_model()},
        precisions=["fp32", "fp16", "int8"],
        targets={"rtx": {**RTX_SPEC, "compute_capabilities": ["8.6", "8.9", "12.0"]}},
        engine={"dynamic_profiles": [{"min": 1, "opt": 2, "max": 4}]},
    )
    workdir.write_config(cfg)
    bin_dir = workdir.path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"  # a stand-in: the only thing common.smk asks about a GPU
    smi.write_text(f"#!/bin/sh\necho {gpu}\n" if gpu else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old}"
    try:
        jobs = workdir.planned_jobs("engine")
    finally:
        os.environ["PATH"] = old
    assert jobs["build_engine"] == 6 and jobs["convert_onnx_to_fp16"] == 1
    assert jobs["quantize_onnx"] == 1 and jobs["render_engine_summary"] == 1
    runs = gpu == "8.6"
    assert jobs.get("benchmark_engine", 0) == (6 if runs else 0)
    assert jobs.get("check_engine_parity", 0) == (6 if runs else 0)
    assert yaml.safe_load((workdir.path / "config.yaml").read_text())["targets"]["rtx"]


# ---------------------------------------------------------------- a pb in other exporters' layout


@needs_rtx
def test_pb_in_other_exporters_layout_parses_after_the_recipe(tmp_path):
    """NHWC input x:0 [1,H,W,3], output Identity:0 [1,N,5+C] with xywh in 0-1 (a frozen TF
    graph as other YOLOv5 TF exporters write it): patched and Q/DQ both parse."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from trtflow.stages.convert import convert_pb_to_onnx
    from trtflow.stages.quantize import quantize_onnx
    from trtflow.tf.yolov5 import build_yolov5

    keras_model = build_yolov5("n", 2, SIZE)
    scale = tf.constant([1 / SIZE] * 4 + [1.0] * 3, tf.float32)  # 5 + 2 classes

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="x")])
    def serve(x):
        return keras_model(x, training=False) * scale

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    assert [t.name for t in frozen.inputs] == ["x:0"]
    assert [t.name for t in frozen.outputs] == ["Identity:0"]
    pb = tmp_path / "model.pb"
    pb.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    convert_pb_to_onnx(pb, tmp_path / "raw.onnx", "x:0", "Identity:0")
    assert rtx.parse_onnx(tmp_path / "raw.onnx")  # tf2onnx's Resize: rejected
    recipe = ["nchw_input", "denormalize_boxes", "fix_batch", "rename_io", "drop_noops",
              "sanitize", "int64_to_int32", "nearest_resize"]  # fmt: skip
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    patched, _ = apply_patches(raw, recipe, PatchOptions(SIZE, batch="dynamic"))
    onnx.save(patched, str(tmp_path / "patched.onnx"))
    assert rtx.parse_onnx(tmp_path / "patched.onnx") == []
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((2, 3, SIZE, SIZE), dtype=np.float32))
    quantize_onnx(tmp_path / "patched.onnx", calib, tmp_path / "qdq.onnx", tmp_path / "r.json")
    assert rtx.parse_onnx(tmp_path / "qdq.onnx") == []


def test_manifest_command_reproduces_the_engine(variant, tmp_path):
    """The engine manifest's command, run as is from the repo (its config.yaml's rtx target),
    rebuilds the engine; `trtflow fp16` makes the fp16 ONNX."""
    import shlex

    from tests.conftest import REPO, run_cli
    from trtflow.core.config import load_config
    from trtflow.core.manifest import read_json
    from trtflow.stages.engine import build_engine

    if not variant["dir"].name.startswith("yolov5n"):
        pytest.skip("one variant is enough")
    r = run_cli("fp16", "--onnx", str(variant["patched"]), "--out", str(tmp_path / "h.onnx"))
    assert r.returncode == 0, r.stderr
    assert rtx.parse_onnx(tmp_path / "h.onnx") == []
    spec = load_config(REPO / "config.yaml")["targets"]["rtx"]
    engine = tmp_path / "fp16.engine"
    man = build_engine(
        variant["patched"],
        engine,
        target="rtx",
        spec=spec,
        precision="fp16",
        profile="b1-2-4",
        image_size=SIZE,
        fp16_onnx=tmp_path / "h.onnx",
    )
    argv = shlex.split(man["command"])
    assert argv[:2] == ["trtflow", "build-engine"]
    again = tmp_path / "again.engine"
    argv[argv.index("--out") + 1] = str(again)
    r = run_cli(*argv[1:])
    assert r.returncode == 0, r.stderr
    rebuilt = read_json(f"{again}.manifest.json")
    assert rebuilt["size_bytes"] == man["size_bytes"]  # same plan (not bytewise: it is stamped)
    assert rebuilt["compute_capabilities"] == ["8.6", "8.9", "12.0"]
    assert rebuilt["inputs"] == man["inputs"]


@needs_rtx
def test_report_lists_engines_built_here_as_not_run_not_as_failed(workdir):
    """Without a supported GPU the benchmark/parity jobs of an RTX target are not in the DAG:
    the report shows the built engines, and no missing benchmark as a failure."""
    from tests.conftest import tiny_config, tiny_model

    cfg = tiny_config(
        {"tiny": tiny_model()},
        precisions=["fp32"],
        targets={"rtx": {**RTX_SPEC, "compute_capabilities": ["8.6"]}},
    )
    workdir.write_config(cfg)
    bin_dir = workdir.path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # no GPU, whatever this host has
    (bin_dir / "nvidia-smi").chmod(0o755)
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old}"
    try:
        workdir.snakemake("engine")
        workdir.snakemake("report")
    finally:
        os.environ["PATH"] = old
    zoo = (workdir.path / "results/report/zoo.html").read_text()
    assert "missing results/benchmark_engine" not in zoo
    assert "failed" not in zoo.split("<h2")[0].lower(), zoo.split("<h2")[0][-2000:]
    summary = (workdir.path / "results/engine_summary.md").read_text()
    assert "built, not run: no supported GPU here" in summary
