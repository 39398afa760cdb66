"""Stage "quantize" (convert host): patched ONNX -> Q/DQ ONNX for TensorRT explicit INT8.

ONNX Runtime's static quantization (``quantize_static``, QDQ format) calibrates the patched ONNX
on ``calib.npy`` and inserts QuantizeLinear/DequantizeLinear pairs the way TensorRT's explicit
quantization expects: INT8, symmetric (zero point 0), per-channel weights (axis 0, kept as float
initializers behind a Q/DQ pair), per-tensor activations, float biases. The detect head's decode
(every node between the last Conv layers and the outputs) stays in float; those last Convs are
INT8 by default (``keep_head_convs_float`` keeps them float).

The activation ranges the quantizer used are written next to the model (``ranges.json``); the
same ranges become TensorRT's implicit-INT8 calibration cache (``write_trt_calibration_cache``)
for TensorRT 8.x targets.

NVIDIA ModelOpt's ONNX PTQ would be the first choice, but it does not install with our pins:
it requires torch and its ``onnx`` extra pins onnx~=1.21, onnxruntime-gpu~=1.24 and cupy-cuda12x
on Linux x86 (README "INT8").
"""

from __future__ import annotations

import fnmatch
import json
import logging
import struct
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.errors import TrtflowError
from trtflow.manifest import atomic_path, read_json, sha256_path, write_json, write_manifest
from trtflow.onnxio import load_onnx

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
#: Calibrator algorithms TensorRT writes in a cache header (IInt8Calibrator::getAlgorithm()).
TRT_ALGORITHMS = (
    "EntropyCalibration2",
    "MinMaxCalibration",
    "EntropyCalibration",
    "LegacyCalibration",
)
#: Plugin ops ONNX Runtime cannot run; detached for calibration and put back afterwards.
PLUGIN_SUFFIX = "_TRT"
#: Images per ONNX Runtime calibration pass (bounds the memory of the intermediate outputs).
CALIB_CHUNK = 8


# ---------------------------------------------------------------- graph helpers
def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def decode_nodes(model: Any) -> tuple[list[str], list[str]]:
    """(decode nodes, head Convs): nodes between the last Conv layers and the graph outputs.

    Walks back from every graph output until a Conv; those Convs are the detect head's output
    layers, everything passed on the way (reshape/transpose/sigmoid/grid and anchor math,
    concatenation) is the decode.
    """
    prod = _producers(model)
    decode: list[str] = []
    heads: list[str] = []
    seen: set[int] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = prod.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            heads.append(node.name)
            continue
        decode.append(node.name)
        stack.extend(i for i in node.input if i)
    return sorted(decode), sorted(heads)


def float_nodes(
    model: Any,
    keep_decode: bool = True,
    keep_head_convs: bool = False,
    patterns: Iterable[str] = (),
) -> list[str]:
    """Names of the nodes that stay in float (decode, head Convs, glob patterns on node names)."""
    decode, heads = decode_nodes(model)
    names = set(decode if keep_decode else []) | set(heads if keep_head_convs else [])
    patterns = list(patterns)
    for node in model.graph.node:
        if any(fnmatch.fnmatchcase(node.name, p) for p in patterns):
            names.add(node.name)
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n.name, p) for n in model.graph.node):
            log.warning("int8.float_nodes pattern %r matches no node", p)
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed:
        raise TrtflowError(
            f"{len(unnamed)} nodes have no name (first: {unnamed[0].op_type})",
            "run the sanitize patch, which names every node",
        )
    return sorted(names)


def detach_plugins(model: Any) -> tuple[Any, list[Any], list[Any]]:
    """Remove TensorRT plugin nodes (e.g. EfficientNMS_TRT); their inputs become the outputs.

    Returns (model without plugins, the removed nodes, the original graph outputs).
    """
    import onnx

    plugins = [n for n in model.graph.node if n.op_type.endswith(PLUGIN_SUFFIX)]
    if not plugins:
        return model, [], []
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    outputs = list(stripped.graph.output)
    keep = [n for n in stripped.graph.node if not n.op_type.endswith(PLUGIN_SUFFIX)]
    del stripped.graph.node[:]
    stripped.graph.node.extend(keep)
    del stripped.graph.output[:]
    for node in plugins:
        for name in node.input:
            if name and not any(o.name == name for o in stripped.graph.output):
                stripped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    log.info("detached %s for calibration", ", ".join(f"{n.op_type} {n.name}" for n in plugins))
    return stripped, plugins, outputs


def reattach_plugins(model: Any, plugins: list[Any], outputs: list[Any]) -> Any:
    """Put back what detach_plugins removed (after quantization, in float)."""
    if not plugins:
        return model
    model.graph.node.extend(plugins)
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def qdq_s8_to_u8(model: Any) -> tuple[Any, int]:
    """Re-encode int8 activation Q/DQ pairs as uint8 with zero point + 128, for x86 CPUs.

    The same quantization grid (q_u8 = q_s8 + 128, same scale and clamping range), so the
    numbers are unchanged; only the storage type differs. ONNX Runtime's x86 kernels fuse
    uint8-activation / int8-weight QLinearConv (the VNNI path), but leave a Conv in float when
    an int8 activation's QuantizeLinear feeds several DequantizeLinear — which is every SiLU
    (x * sigmoid(x)) of YOLOv5. Weights (DequantizeLinear of an initializer) stay int8.
    Works on a copy; returns (model, number of QuantizeLinear re-encoded).
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    init = {i.name: i for i in g.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    converted: dict[str, str] = {}

    def u8(name: str) -> str:
        if name not in converted:
            arr = numpy_helper.to_array(init[name]).astype(np.int16) + 128
            t = numpy_helper.from_array(arr.astype(np.uint8), f"{name}__u8")
            g.initializer.append(t)
            converted[name] = t.name
        return converted[name]

    count = 0
    for q in g.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[2] not in init:
            continue
        if q.input[0] in init:  # a weight's Q/DQ pair: int8 weights are what the kernels take
            continue
        if init[q.input[2]].data_type != onnx.TensorProto.INT8:
            continue
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or len(d.input) < 3 for d in dqs):
            continue
        q.input[2] = u8(q.input[2])
        for d in dqs:
            d.input[2] = u8(d.input[2])
        count += 1
    return out, count


def stem_space_to_depth(model: Any) -> tuple[Any, bool]:
    """Rewrite a quantized 6x6/stride-2/pad-2 stem Conv as SpaceToDepth(2) + 3x3/stride-1/pad-1.

    YOLOv5 v6+'s stem is the old Focus layer (space-to-depth, then a 3x3 conv) folded into one
    6x6 conv. On the CPU the INT8 6x6 conv over 3 channels is slower than fp32 (its im2col gathers
    3 bytes at a time: 5.1 vs 2.8 ms on yolov5s-640, 2 threads); unfolded it takes the fast
    path. The rewrite moves the quantized (uint8) input through SpaceToDepth — an exact
    permutation — and permutes the int8 weights the same way, so the integer sums and the output
    are bit-identical; the Conv's pad-1 pads with the input's zero point, i.e. exactly 0.0 like
    the original pad 2. For the CPU copy only (``load_for_cpu``); the file TensorRT builds keeps
    its 6x6 conv. Returns (model, whether it was rewritten); other stems are left alone.
    """
    import onnx
    from onnx import helper, numpy_helper

    from trtflow.patches import node_attr

    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    init = {i.name: i for i in g.initializer}
    convs = [i for i, n in enumerate(g.node) if n.op_type == "Conv"]
    if not convs:
        return model, False
    conv = g.node[convs[0]]
    shape = (node_attr(conv, "kernel_shape"), node_attr(conv, "strides"), node_attr(conv, "pads"))
    if shape != ([6, 6], [2, 2], [2, 2, 2, 2]) or node_attr(conv, "group", 1) != 1:
        return model, False
    if node_attr(conv, "dilations", [1, 1]) != [1, 1] or node_attr(
        conv, "auto_pad", b"NOTSET"
    ) not in (
        b"NOTSET",
        "NOTSET",
    ):
        return model, False
    x_dq, w_dq = prod.get(conv.input[0]), prod.get(conv.input[1])
    if x_dq is None or x_dq.op_type != "DequantizeLinear":
        return model, False  # float stem: a rewrite would change the float summation order
    w_q = prod.get(w_dq.input[0]) if w_dq is not None else None
    if (
        w_dq is None
        or w_dq.op_type != "DequantizeLinear"
        or w_q is None
        or w_q.input[0] not in init
    ):
        return model, False
    w_name = w_q.input[0]
    if sum(w_name in n.input for n in g.node) != 1:
        return model, False
    w = numpy_helper.to_array(init[w_name])
    if w.ndim != 4 or w.shape[2:] != (6, 6):
        return model, False
    x_dq_index = next(i for i, n in enumerate(g.node) if n.output[:1] == x_dq.output[:1])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    conv, x_dq = g.node[convs[0]], g.node[x_dq_index]  # the same nodes in the copy
    o, c = w.shape[:2]
    # SpaceToDepth channel (dy * 2 + dx) * C + c holds pixel (2y + dy, 2x + dx) of channel c.
    w2 = w.reshape(o, c, 3, 2, 3, 2).transpose(0, 3, 5, 1, 2, 4).reshape(o, 4 * c, 3, 3)
    w_init = next(i for i in g.initializer if i.name == w_name)
    w_init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w2), w_name))
    s2d_out = f"{x_dq.input[0]}__space_to_depth"
    s2d = helper.make_node(
        "SpaceToDepth", [x_dq.input[0]], [s2d_out], f"{conv.name}__space_to_depth", blocksize=2
    )
    x_dq.input[0] = s2d_out
    for name, value in (("kernel_shape", [3, 3]), ("strides", [1, 1]), ("pads", [1, 1, 1, 1])):
        for a in [a for a in conv.attribute if a.name == name]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute(name, value))
    nodes = list(g.node)
    nodes.insert(nodes.index(x_dq), s2d)  # SpaceToDepth's input (the Q output) precedes the DQ
    del g.node[:]
    g.node.extend(nodes)
    return out, True


def load_for_cpu(path: str | Path) -> Any:
    """An ONNX prepared for ONNX Runtime CPU: plugins detached; in a Q/DQ model, activations
    re-encoded as uint8 (``qdq_s8_to_u8``) and a 6x6 stem unfolded (``stem_space_to_depth``) —
    both exact, the numbers do not change."""

    model = load_onnx(path)
    model, _, _ = detach_plugins(model)
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        model, n = qdq_s8_to_u8(model)
        log.debug("%s: %d activation Q/DQ pairs re-encoded as uint8 for the CPU", path, n)
        model, unfolded = stem_space_to_depth(model)
        if unfolded:
            log.debug("%s: 6x6 stem unfolded to SpaceToDepth + 3x3 for the CPU", path)
    return model


#: float32 adds integers exactly while every partial sum stays below 2**24.
EXACT_INT_LIMIT = 2**24


def _quantize_weight(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """QuantizeLinear of a float initializer as ONNX defines it (x / scale, round half to even,
    saturate), minus the zero point: the integer values TensorRT multiplies."""
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.reshape(shape) if scale.ndim else scale
    z = zero.reshape(shape).astype(np.int32) if zero.ndim else np.int32(zero)
    info = np.iinfo(zero.dtype)
    q = np.clip(np.rint(w.astype(np.float32) / s), info.min, info.max).astype(np.int32)
    return (q - z).astype(np.float32)


def integer_form(model: Any) -> tuple[Any, dict[str, int]]:
    """The Q/DQ model rewritten to compute each quantized Conv the way TensorRT does.

    ``DQ(Q(x)) -> Conv <- DQ(Q(W))`` becomes ``Cast(Q(x)) - zx -> Conv(integer weights) ->
    x scale_x * scale_w -> + bias``: the products of int8 values are summed as integers (held in
    float32, which is exact below 2**24 — checked per output channel from the weights, and a Conv
    whose bound is higher is split over input channels into exact chunks added in a fixed
    order), then rescaled once. The integer part is therefore bit-identical on every CPU,
    whatever its instruction set or summation order; what remains is elementwise float math
    (rescale, SiLU, the next QuantizeLinear's rounding). Unlike ONNX Runtime's fused kernels, no
    16-bit intermediate can saturate. Run it with graph optimisations off
    (``make_session(..., exact=True)``) so nothing folds the scales back into the weights.
    Works on a copy; returns (model, counts of rewritten and split Convs).
    """
    import onnx
    from onnx import helper, numpy_helper

    from trtflow.patches import node_attr

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    init = {i.name: i for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(init[name])

    def dq_of(name: str) -> Any | None:
        n = prod.get(name)
        ok = n is not None and n.op_type == "DequantizeLinear" and len(n.input) == 3
        return n if ok and all(i in init for i in n.input[1:]) else None

    nodes, stats = [], {"convs": 0, "split": 0}
    for n in g.node:
        dx, dw = (dq_of(n.input[0]), dq_of(n.input[1])) if n.op_type == "Conv" else (None, None)
        qw = prod.get(dw.input[0]) if dw is not None else None
        if dx is None or qw is None or qw.op_type != "QuantizeLinear" or qw.input[0] not in init:
            nodes.append(n)
            continue
        sx, zx = arr(dx.input[1]), arr(dx.input[2])
        sw, zw = arr(dw.input[1]), arr(dw.input[2])
        if sx.size != 1:
            nodes.append(n)
            continue
        w_int = _quantize_weight(arr(qw.input[0]), sw, zw, int(node_attr(dw, "axis", 1)))
        c_out = w_int.shape[0]
        x_max = float(max(abs(np.iinfo(zx.dtype).min - int(zx)), np.iinfo(zx.dtype).max - int(zx)))
        per_in = np.abs(w_int).reshape(c_out, w_int.shape[1], -1).sum(axis=2) * x_max
        # input-channel chunks whose worst-case partial sum stays exact in float32
        chunks, start, acc = [], 0, np.zeros(c_out)
        for c in range(w_int.shape[1]):
            if c > start and (acc + per_in[:, c]).max() >= EXACT_INT_LIMIT:
                chunks.append((start, c))
                start, acc = c, np.zeros(c_out)
            acc += per_in[:, c]
        chunks.append((start, w_int.shape[1]))
        if int(node_attr(n, "group", 1)) != 1 and len(chunks) > 1:
            raise TrtflowError(
                f"grouped Conv {n.name} sums past 2**24: no exact integer form",
                "report this model; keep the node float with int8.float_nodes",
            )
        base = n.name or n.output[0]
        xi = f"{base}__xint"
        nodes.append(helper.make_node("Cast", [dx.input[0]], [f"{xi}_cast"],
                                      to=onnx.TensorProto.FLOAT, name=f"{xi}_cast"))  # fmt: skip
        g.initializer.append(numpy_helper.from_array(np.float32(zx).reshape(()), f"{xi}_zero"))
        nodes.append(helper.make_node("Sub", [f"{xi}_cast", f"{xi}_zero"], [xi], name=xi))
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        partial = []
        for k, (lo, hi) in enumerate(chunks):
            wname = f"{base}__wint{k}"
            g.initializer.append(numpy_helper.from_array(w_int[:, lo:hi], wname))
            src = xi
            if len(chunks) > 1:
                src = f"{base}__xint{k}"
                for suffix, v in (("lo", lo), ("hi", hi), ("ax", 1)):
                    g.initializer.append(
                        numpy_helper.from_array(np.array([v], np.int64), f"{src}_{suffix}")
                    )
                bounds = [xi, f"{src}_lo", f"{src}_hi", f"{src}_ax"]
                nodes.append(helper.make_node("Slice", bounds, [src], name=src))
            partial.append(f"{base}__acc{k}")
            nodes.append(helper.make_node("Conv", [src, wname], [partial[-1]],
                                          name=partial[-1], **conv_attrs))  # fmt: skip
        total = partial[0]
        for k, name in enumerate(partial[1:], 1):  # fixed order: deterministic rounding
            nodes.append(helper.make_node("Add", [total, name], [f"{base}__sum{k}"],
                                          name=f"{base}__sum{k}"))  # fmt: skip
            total = f"{base}__sum{k}"
        scale = (sx.astype(np.float32) * sw.astype(np.float32)).reshape(1, -1, 1, 1)
        g.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"{base}__scale"))
        rescaled = n.output[0] if len(n.input) < 3 or not n.input[2] else f"{base}__rescaled"
        nodes.append(helper.make_node("Mul", [total, f"{base}__scale"], [rescaled],
                                      name=f"{base}__rescale"))  # fmt: skip
        if rescaled != n.output[0]:
            bias = numpy_helper.to_array(init[n.input[2]]).reshape(1, -1, 1, 1)
            g.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{base}__bias"))
            nodes.append(helper.make_node("Add", [rescaled, f"{base}__bias"], [n.output[0]],
                                          name=f"{base}__bias_add"))  # fmt: skip
        stats["convs"] += 1
        stats["split"] += len(chunks) > 1
    # drop what no longer feeds anything (the weights' Q/DQ pairs, unused activation DQs)
    needed = {o.name for o in g.output}
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del g.node[:]
    g.node.extend(reversed(kept))
    used = {i for node in kept for i in node.input}
    keep_init = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_init)
    return out, stats


def load_exact(path: str | Path) -> Any:
    """A Q/DQ ONNX in its ``integer_form`` (plugins detached), for accuracy figures that are the
    same on every CPU; a float ONNX comes back unchanged apart from detached plugins."""

    model = load_onnx(path)
    model, _, _ = detach_plugins(model)
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        model, stats = integer_form(model)
        log.info(
            "%s: %d quantized Convs in TensorRT's integer arithmetic (%d split into exact chunks)",
            path, stats["convs"], stats["split"],
        )  # fmt: skip
    return model


# ---------------------------------------------------------------- calibration reader
class _Reader:
    """onnxruntime CalibrationDataReader over a calibration array (supports set_range)."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self.batches = batches
        self.input_name = input_name
        self.start, self.end, self.pos = 0, len(batches), 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, min(end_index, len(self.batches)), start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.end:
            return None
        self.pos += 1
        return {self.input_name: self.batches[self.pos - 1]}


def model_batches(model: Any, x_nchw: np.ndarray) -> tuple[str, list[np.ndarray]]:
    """(input name, batches of ``x_nchw`` in the layout and static batch the model takes)."""
    from trtflow.calib import to_layout

    inp = model.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    x = to_layout(x_nchw, dims)
    size = dims[2:4] if dims[1] == 3 else dims[1:3]
    if all(isinstance(d, int) and d > 0 for d in size) and list(x_nchw.shape[2:]) != size:
        raise TrtflowError(
            f"calibration images are {x_nchw.shape[2]}x{x_nchw.shape[3]}, the model takes {size}",
            "rerun make_calibration_data for this image size",
        )
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    n = len(x) // batch * batch
    if n == 0:
        raise TrtflowError(
            f"{len(x)} calibration images are fewer than the model's static batch {batch}",
            f"set calibration.count to at least {batch}",
        )
    if n < len(x):
        log.warning("static batch %d: using %d of %d calibration images", batch, n, len(x))
    return inp.name, [np.ascontiguousarray(x[i : i + batch]) for i in range(0, n, batch)]


# ---------------------------------------------------------------- stage functions
def quantize_onnx(
    onnx_in: str | Path,
    calib_npy: str | Path,
    onnx_out: str | Path,
    ranges_out: str | Path,
    method: str = "minmax",
    percentile: float = 99.999,
    keep_decode_float: bool = True,
    keep_head_convs_float: bool = False,
    float_node_patterns: Iterable[str] = (),
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Calibrate ``onnx_in`` on ``calib_npy`` and write the Q/DQ ONNX and its activation ranges."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from trtflow.calib import load_array

    started = time.time()
    if method not in METHODS:
        raise TrtflowError(
            f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}"
        )
    if not Path(onnx_in).is_file():
        raise TrtflowError(f"{onnx_in}: ONNX file not found", "run patch_onnx first")
    calib = load_array(calib_npy)
    model = load_onnx(onnx_in)
    stripped, plugins, outputs = detach_plugins(model)
    keep = float_nodes(stripped, keep_decode_float, keep_head_convs_float, float_node_patterns)
    input_name, batches = model_batches(stripped, calib)
    log.info(
        "%d nodes stay float: %s", len(keep), ", ".join(keep[:8]) + (" …" if len(keep) > 8 else "")
    )

    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,  # TensorRT: zero point 0
        "WeightSymmetric": True,
        "QDQKeepRemovableActivations": True,  # TensorRT fuses activations itself
        "AddQDQPairToWeight": True,  # float weights + Q/DQ: parsed by TensorRT 8.x and 10.x
        "QuantizeBias": False,  # TensorRT takes float biases
        "CalibPercentile": percentile,
    }
    chunk = next(c for c in range(min(CALIB_CHUNK, len(batches)), 0, -1) if len(batches) % c == 0)
    if chunk < len(batches):
        extra["CalibStridedMinMax"] = chunk  # ORT's name; it chunks every method's collection
    with tempfile.TemporaryDirectory(prefix="trtflow-quant-") as tmpdir:
        src = Path(tmpdir) / "model.onnx"
        onnx.save(stripped, str(src))
        cache = Path(tmpdir) / "ranges.json"
        qdq_tmp = Path(tmpdir) / "model.qdq.onnx"
        try:
            quantize_static(
                str(src),
                str(qdq_tmp),
                _Reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
                calibrate_method=calibrate_method,
                extra_options=extra,
                calibration_cache_path=str(cache),
            )
        except (ValueError, RuntimeError) as exc:
            raise TrtflowError(
                f"ONNX Runtime quantization of {onnx_in} failed ({type(exc).__name__}: {exc})",
                "check the patched ONNX runs in ONNX Runtime and the calibration array matches it",
            ) from exc
        ranges = _read_ranges(cache)
        qdq = onnx.load(str(qdq_tmp))
    onnx.checker.check_model(qdq)  # before the plugins: the checker does not know them
    qdq = reattach_plugins(qdq, plugins, outputs)
    float_tensors = sorted(
        {o for n in stripped.graph.node if n.name in set(keep) for o in n.output}
    )
    with atomic_path(onnx_out) as tmp:
        onnx.save(qdq, str(tmp))
    ops = [n.op_type for n in qdq.graph.node]
    write_json(
        ranges_out,
        {
            "method": method,
            "percentile": percentile if method == "percentile" else None,
            "source": str(onnx_in),
            "source_sha256": sha256_path(onnx_in),
            "calibration_sha256": sha256_path(calib_npy),
            "images": int(len(calib)),
            "float_nodes": keep,
            "float_tensors": float_tensors,
            "ranges": ranges,
        },
    )
    log.info(
        "%s: %d QuantizeLinear, %d DequantizeLinear, %d activation ranges (%s, %d images)",
        onnx_out, ops.count("QuantizeLinear"), ops.count("DequantizeLinear"), len(ranges), method,
        len(calib),
    )  # fmt: skip
    opts = {"method": method, "percentile": percentile, "keep_decode_float": keep_decode_float,
            "keep_head_convs_float": keep_head_convs_float,
            "float_node_patterns": list(float_node_patterns), "per_channel": True,
            "activation_type": "int8", "weight_type": "int8", "symmetric": True,
            "extra_options": extra}  # fmt: skip
    command = ["trtflow", "quantize", "--onnx", onnx_in, "--calib", calib_npy, "--out",
               onnx_out, "--ranges-out", ranges_out, "--method", method, "--percentile",
               percentile]  # fmt: skip
    if not keep_decode_float:
        command.append("--quantize-decode")
    if keep_head_convs_float:
        command.append("--float-head-convs")
    for p in float_node_patterns:
        command += ["--float-node", p]
    return write_manifest(
        onnx_out,
        stage="quantize_onnx",
        inputs={"onnx": onnx_in, "calibration": calib_npy},
        options=opts,
        command=command,
        started=started,
        extra={
            "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
            "nodes": len(qdq.graph.node),
            "quantize_linear": ops.count("QuantizeLinear"),
            "dequantize_linear": ops.count("DequantizeLinear"),
            "float_nodes": keep,
            "plugins": [n.name for n in plugins],
            "ranges": str(ranges_out),
        },
        manifest_path=manifest_path,
    )


def _read_ranges(cache: Path) -> dict[str, list[float]]:
    """ORT's JSON calibration cache -> {tensor: [low, high]}."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache)
    out = {}
    for name, value in data.data.items():
        lo, hi = value.range_value
        out[name] = [float(np.asarray(lo).min()), float(np.asarray(hi).max())]
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- TensorRT calibration cache
def trt_version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for "major.minor.patch" (8.6.1 -> 8601, 10.3.0 -> 100300)."""
    try:
        parts = [int(p) for p in version.split(".")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or parts[0] < 1:
        raise TrtflowError(
            f"TensorRT version {version!r} is not major.minor.patch", 'use e.g. "8.6.1"'
        )
    major, minor, patch = (parts + [0])[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def scale_hex(amax: float) -> str:
    """amax/127 as the big-endian float32 hex TensorRT writes in a calibration cache."""
    return struct.pack(">f", np.float32(amax / 127.0)).hex()


def trt_cache_text(
    ranges: dict[str, list[float]],
    version: str,
    algorithm: str = "EntropyCalibration2",
    skip: Iterable[str] = (),
) -> tuple[str, list[str]]:
    """TensorRT calibration cache text and the tensors left out (zero/non-finite range or skip)."""
    if algorithm not in TRT_ALGORITHMS:
        raise TrtflowError(
            f"unknown TensorRT calibrator algorithm {algorithm!r}",
            f"use one of: {', '.join(TRT_ALGORITHMS)}",
        )
    lines = [f"TRT-{trt_version_code(version)}-{algorithm}"]
    skip = set(skip)
    left_out = []
    for name, (lo, hi) in sorted(ranges.items()):
        amax = max(abs(lo), abs(hi))
        if name in skip or not np.isfinite(amax) or amax <= 0:
            left_out.append(name)
            continue
        lines.append(f"{name}: {scale_hex(amax)}")
    return "\n".join(lines) + "\n", left_out


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a TensorRT calibration cache."""
    lines = Path(path).read_text().splitlines()
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return lines[0], scales


def write_trt_calibration_cache(
    ranges_json: str | Path,
    cache_out: str | Path,
    version: str,
    algorithm: str = "EntropyCalibration2",
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """TensorRT implicit-INT8 calibration cache for one TensorRT version from ``ranges.json``.

    Tensors of nodes kept in float for the Q/DQ model get no entry, so TensorRT runs the decode
    in float in implicit mode too.
    """
    started = time.time()
    try:
        data = read_json(ranges_json)
        ranges = data["ranges"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise TrtflowError(
            f"{ranges_json} is not a ranges file ({exc})", "rerun quantize_onnx"
        ) from None
    text, left_out = trt_cache_text(ranges, version, algorithm, data.get("float_tensors", []))
    with atomic_path(cache_out) as tmp:
        tmp.write_text(text)
    entries = text.count("\n") - 1
    log.info(
        "%s: %s, %d tensors (%d left out)",
        cache_out,
        text.split("\n", 1)[0],
        entries,
        len(left_out),
    )
    return write_manifest(
        cache_out,
        stage="write_calibration_cache",
        inputs={"ranges": ranges_json},
        options={"tensorrt_version": version, "algorithm": algorithm},
        command=[
            "trtflow",
            "trt-cache",
            "--ranges",
            ranges_json,
            "--out",
            cache_out,
            "--trt-version",
            version,
            "--algorithm",
            algorithm,
        ],  # fmt: skip
        started=started,
        extra={
            "header": text.split("\n", 1)[0],
            "tensorrt_version_code": trt_version_code(version),
            "entries": entries,
            "left_out": left_out,
            "source_onnx": data.get("source"),
            "source_sha256": data.get("source_sha256"),
            "method": data.get("method"),
        },
        manifest_path=manifest_path,
    )
