"""quantize_onnx: Q/DQ layout for TensorRT, float decode, ranges, TensorRT cache, CPU form."""

from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from int8_models import SIZE, tiny_detector
from onnx import helper, numpy_helper

from trtflow.core.errors import TrtflowError
from trtflow.images.detections import error_stats
from trtflow.quant.exact import integer_form, load_exact
from trtflow.quant.kernels import load_for_cpu, qdq_s8_to_u8, stem_space_to_depth
from trtflow.quant.qdq import decode_nodes, float_nodes
from trtflow.stages.quantize import quantize_onnx, write_trt_calibration_cache
from trtflow.trt.calibration_cache import (
    read_trt_cache,
    scale_hex,
    trt_cache_text,
    trt_version_code,
)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    tiny_detector(d / "model.onnx")
    rng = np.random.default_rng(1)
    np.save(d / "calib.npy", rng.random((6, 3, SIZE, SIZE), dtype=np.float32))
    np.save(d / "holdout.npy", rng.random((3, 3, SIZE, SIZE), dtype=np.float32))
    m = quantize_onnx(
        d / "model.onnx",
        d / "calib.npy",
        d / "qdq.onnx",
        d / "ranges.json",
        float_head_convs=True,
    )
    return d, m


def _init(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_qdq_layout_is_what_tensorrt_takes(quantized):
    d, manifest = quantized
    model = onnx.load(str(d / "qdq.onnx"))
    init = _init(model)
    prod = {o: n for n in model.graph.node for o in n.output}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs and manifest["quantize_linear"] == len(qs)
    for n in qs + dqs:  # symmetric INT8: every zero point is an int8 zero
        zp = init[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
    backbone = [n for n in model.graph.node if n.op_type == "Conv" and "backbone" in n.name]
    assert len(backbone) == 3
    for conv in backbone:
        x_dq, w_dq = prod[conv.input[0]], prod[conv.input[1]]
        assert x_dq.op_type == w_dq.op_type == "DequantizeLinear"
        assert init[x_dq.input[1]].size == 1  # per-tensor activation scale
        w_q = prod[w_dq.input[0]]  # float weight -> Q -> DQ (parsed by TensorRT 8.x and 10.x)
        assert w_q.op_type == "QuantizeLinear" and init[w_q.input[0]].dtype == np.float32
        cout = init[w_q.input[0]].shape[0]
        assert init[w_dq.input[1]].shape == (cout,)  # per-channel weight scales ...
        assert {a.name: a.i for a in w_dq.attribute}.get("axis", 1) == 0  # ... along axis 0
        assert conv.input[2] in init and init[conv.input[2]].dtype == np.float32  # float bias


def test_decode_and_head_conv_stay_float(quantized):
    d, manifest = quantized
    model = onnx.load(str(d / "qdq.onnx"))
    qdq_ops = {"QuantizeLinear", "DequantizeLinear"}
    prod = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    decode = [n for n in model.graph.node if n.name.startswith("decode.")]
    assert len(decode) == 11
    for n in decode + [n for n in model.graph.node if n.name == "head.conv"]:
        for o in n.output:
            assert not any(c.op_type in qdq_ops for c in consumers.get(o, [])), n.name
        if n.name != "head.conv":
            assert not any(i in prod and prod[i].op_type in qdq_ops for i in n.input), n.name
    assert "head.conv" in manifest["float_nodes"] and "decode.concat" in manifest["float_nodes"]


def test_float_node_choices(tmp_path):
    model = tiny_detector()
    decode, heads = decode_nodes(model)
    assert heads == ["head.conv"] and "decode.sigmoid" in decode and len(decode) == 11
    assert float_nodes(model, False, False) == []
    assert sorted(float_nodes(model)) == sorted(decode)  # default: head Conv is INT8
    assert float_nodes(model, False, True) == ["head.conv"]
    assert "backbone.0.conv" in float_nodes(model, False, False, ["backbone.0.*"])


def test_int8_close_to_fp32_and_cpu_reencoding_is_lossless(quantized):
    from trtflow.onnx.ort import make_session
    from trtflow.quant.kernels import probe_int8_kernels

    d, _ = quantized
    x = np.load(d / "holdout.npy")
    fp32 = make_session(str(d / "model.onnx"))
    qdq = onnx.load(str(d / "qdq.onnx"))
    u8_model, n = qdq_s8_to_u8(qdq)
    assert n > 0
    y = fp32.run(None, {"images": x})[0]
    # as written, with nothing fused: the uint8 grid is the int8 grid, the numbers are equal
    y8 = make_session(qdq, exact=True).run(None, {"images": x})[0]
    yu = make_session(u8_model, exact=True).run(None, {"images": x})[0]
    assert error_stats(y8[..., 4:], y[..., 4:])["sqnr_db"] > 20
    assert np.array_equal(yu, y8)
    # ONNX Runtime's fused integer kernels (the speed on x86) take the uint8 form ...
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(d / "u8.opt.onnx")
    ort.InferenceSession(u8_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(d / "u8.opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 3
    # ... and agree with it only where the probe finds them exact on this CPU
    if probe_int8_kernels("u8")["exact"]:
        yf = make_session(u8_model).run(None, {"images": x})[0]
        assert error_stats(yf[..., 4:], y8[..., 4:])["sqnr_db"] > 30


def _qdq_conv(cin: int, k: int, rng, weight_scale: float = 1.0):
    """One Q/DQ Conv as quantize_onnx writes it (float weights behind Q/DQ, float bias)."""
    cout = 4
    w = (rng.standard_normal((cout, cin, k, k)) * weight_scale).astype(np.float32)
    sw = (np.abs(w).reshape(cout, -1).max(axis=1) / 127).astype(np.float32)
    tensors = {"sx": np.array(0.05, np.float32), "zx": np.array(0, np.int8), "w": w,
               "sw": sw, "zw": np.zeros(cout, np.int8),
               "b": rng.standard_normal(cout).astype(np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["y"], name="conv", pads=[k // 2] * 4),
    ]
    graph = helper.make_graph(
        nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, cin, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, cout, 5, 5])],
        [numpy_helper.from_array(v, n) for n, v in tensors.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tensors


def _integer_reference(x, t, k):
    """TensorRT's arithmetic in numpy: int8 x int8 summed in int64, rescaled once, + bias."""
    xq = np.clip(np.rint(x / t["sx"]), -128, 127).astype(np.int64)
    wq = np.clip(np.rint(t["w"] / t["sw"][:, None, None, None]), -128, 127).astype(np.int64)
    p = k // 2
    xp = np.pad(xq, ((0, 0), (0, 0), (p, p), (p, p)))
    h, w = x.shape[2], x.shape[3]
    acc = np.zeros((1, wq.shape[0], h, w), np.int64)
    for i in range(k):
        for j in range(k):
            acc += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + w], wq[:, :, i, j])
    scale = (t["sx"] * t["sw"]).astype(np.float32).reshape(1, -1, 1, 1)
    return acc, acc.astype(np.float32) * scale + t["b"].reshape(1, -1, 1, 1)


@pytest.mark.parametrize("cin,k", [(8, 3), (1200, 3)])
def test_integer_form_is_tensorrts_int8_arithmetic(cin, k):
    from trtflow.onnx.ort import make_session

    rng = np.random.default_rng(cin)
    model, t = _qdq_conv(cin, k, rng)
    exact, stats = integer_form(model)
    onnx.checker.check_model(exact)
    # every product at full scale (the worst case for 16-bit lanes), plus random inputs
    x = np.concatenate([np.full((1, cin, 5, 5), 127 * 0.05, np.float32),
                        rng.uniform(-8, 8, (1, cin, 5, 5)).astype(np.float32)])  # fmt: skip
    for xi in x:
        acc, ref = _integer_reference(xi[None], t, k)
        got = make_session(exact, 1, exact=True).run(None, {"x": xi[None]})[0]
        assert np.array_equal(got, ref), np.abs(got - ref).max()
    assert stats["convs"] == 1
    # 1200 input channels x 9 taps x 127 x 128 can pass 2**24: split into exact chunks
    assert stats["split"] == (1 if cin == 1200 else 0)
    assert not any(n.op_type == "DequantizeLinear" for n in exact.graph.node)


def test_exact_accuracy_path_ignores_kernel_choices(quantized):
    """The gate's model (integer form, nothing fused) gives the same numbers with 1 or 2
    threads and from the uint8 CPU form as from the file TensorRT builds."""
    from trtflow.onnx.ort import make_session

    d, _ = quantized
    x = np.load(d / "holdout.npy")
    exact = load_exact(d / "qdq.onnx")
    y1 = make_session(exact, 1, exact=True).run(None, {"images": x})[0]
    y2 = make_session(exact, 2, exact=True).run(None, {"images": x})[0]
    assert np.array_equal(y1, y2)
    u8_exact, _ = integer_form(qdq_s8_to_u8(onnx.load(str(d / "qdq.onnx")))[0])
    assert np.array_equal(make_session(u8_exact, 1, exact=True).run(None, {"images": x})[0], y1)
    float_model = load_exact(d / "model.onnx")  # float models are left as they are
    assert [n.op_type for n in float_model.graph.node] == [
        n.op_type for n in onnx.load(str(d / "model.onnx")).graph.node
    ]


def test_ranges_and_trt_cache(quantized, tmp_path):
    d, _ = quantized
    ranges = json.loads((d / "ranges.json").read_text())
    assert ranges["method"] == "minmax" and ranges["images"] == 6
    lo, hi = ranges["ranges"]["images"]
    assert 0 <= lo < 0.05 and 0.95 < hi <= 1.0
    assert "head.conv" in ranges["float_tensors"] and "output0" in ranges["float_tensors"]
    m = write_trt_calibration_cache(d / "ranges.json", tmp_path / "c.cache", "8.6.1")
    header, scales = read_trt_cache(tmp_path / "c.cache")
    assert header == "TRT-8601-EntropyCalibration2" and m["header"] == header
    assert "head.conv" not in scales and "output0" not in scales
    name = "backbone.1.act"
    amax = max(abs(v) for v in ranges["ranges"][name])
    assert scales[name] == pytest.approx(amax / 127, rel=1e-6)
    # big-endian float32 hex, as TensorRT writes it
    line = next(t for t in (tmp_path / "c.cache").read_text().splitlines() if t.startswith(name))
    assert struct.unpack(">f", bytes.fromhex(line.split(": ")[1]))[0] == pytest.approx(amax / 127)


def test_trt_version_codes():
    assert trt_version_code("8.2.1") == 8201
    assert trt_version_code("8.6.1") == 8601
    assert trt_version_code("10.3.0") == 100300
    assert scale_hex(127.0) == "3f800000"
    with pytest.raises(TrtflowError):
        trt_version_code("eight")
    with pytest.raises(TrtflowError):
        trt_cache_text({"x": [0, 1]}, "8.6.1", "Bogus")


def test_plugin_is_detached_for_calibration_and_put_back(tmp_path):
    model = tiny_detector()
    model.graph.node.append(
        helper.make_node("EfficientNMS_TRT", ["output0"], ["num_dets"], name="nms")
    )
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("num_dets", onnx.TensorProto.INT32, ["N", 1])
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "c.npy", np.random.default_rng(0).random((2, 3, SIZE, SIZE), np.float32))
    man = quantize_onnx(tmp_path / "m.onnx", tmp_path / "c.npy", tmp_path / "q.onnx",
                                 tmp_path / "r.json")  # fmt: skip
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert [o.name for o in q.graph.output] == ["num_dets"] and man["plugins"] == ["nms"]
    assert q.graph.node[-1].op_type == "EfficientNMS_TRT"
    cpu = load_for_cpu(tmp_path / "q.onnx")
    assert [o.name for o in cpu.graph.output] == ["output0"]


def test_bad_inputs(tmp_path):
    tiny_detector(tmp_path / "m.onnx")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(TrtflowError, match="model takes"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "wrong.npy", tmp_path / "q.onnx",
                               tmp_path / "r.json")  # fmt: skip
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(TrtflowError, match="cannot be read"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "junk.npy", tmp_path / "q.onnx",
                               tmp_path / "r.json")  # fmt: skip
    with pytest.raises(TrtflowError, match="calibration method"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "wrong.npy", tmp_path / "q.onnx",
                               tmp_path / "r.json", method="kl")  # fmt: skip
    assert not (tmp_path / "q.onnx").exists()


def _stem6_model(path):
    """images -> 6x6/s2/p2 Conv (YOLOv5's stem) -> SiLU -> 3x3 Conv: the stem rewrite's case."""
    rng = np.random.default_rng(3)
    w0 = (rng.standard_normal((8, 3, 6, 6)) * 0.2).astype(np.float32)
    w1 = (rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["images", "w0"],
            ["c0"],
            "stem",
            kernel_shape=[6, 6],
            strides=[2, 2],
            pads=[2, 2, 2, 2],
        ),  # fmt: skip
        helper.make_node("Sigmoid", ["c0"], ["s0"], "stem.sig"),
        helper.make_node("Mul", ["c0", "s0"], ["a0"], "stem.act"),
        helper.make_node("Conv", ["a0", "w1"], ["out"], "head", kernel_shape=[3, 3], pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes, "stem6",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def test_cpu_stem_unfolding_is_bit_identical(tmp_path):
    from trtflow.onnx.ort import make_session

    _stem6_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(4)
    np.save(tmp_path / "calib.npy", rng.random((4, 3, SIZE, SIZE), dtype=np.float32))
    quantize_onnx(tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "q.onnx",
                           tmp_path / "r.json")  # fmt: skip
    plain, _ = qdq_s8_to_u8(onnx.load(str(tmp_path / "q.onnx")))
    cpu = load_for_cpu(tmp_path / "q.onnx")
    onnx.checker.check_model(cpu)
    assert "SpaceToDepth" in [n.op_type for n in cpu.graph.node]
    stem = next(n for n in cpu.graph.node if n.name == "stem")
    assert {a.name: list(a.ints) for a in stem.attribute}["kernel_shape"] == [3, 3]
    x = rng.random((2, 3, SIZE, SIZE), dtype=np.float32)
    ref = make_session(plain, 1).run(None, {"images": x})[0]
    got = make_session(cpu, 1).run(None, {"images": x})[0]
    assert np.array_equal(ref, got)  # the same integer sums: not close, equal
    # The TensorRT file keeps its 6x6 stem; float models and other stems are left alone.
    assert "SpaceToDepth" not in [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    float_model = onnx.load(str(tmp_path / "m.onnx"))
    assert stem_space_to_depth(float_model) == (float_model, False)
    assert "SpaceToDepth" not in [n.op_type for n in load_for_cpu(tmp_path / "m.onnx").graph.node]


def test_cpu_form_of_other_stems_is_unchanged(quantized):
    d, _ = quantized  # tiny_detector: a 3x3/stride-2 stem
    cpu = load_for_cpu(d / "qdq.onnx")
    assert "SpaceToDepth" not in [n.op_type for n in cpu.graph.node]
