"""ONNX Runtime's INT8 kernels on this CPU: which are exact, which form to time, the speed table."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.cpu import cpu_info
from trtflow.core.stats import percentiles
from trtflow.onnx.io import load_onnx
from trtflow.onnx.ort import input_for, make_session
from trtflow.onnx.plugins import detach_plugins

log = logging.getLogger(__name__)


#: Pause before each timed run (ms): longer than ONNX Runtime's spin-wait after a run.
GAP_MS = 50.0
#: CPU forms of a Q/DQ model, fastest first: activation type -> what it is.
INT8_FORMS = {
    "u8": "activations re-encoded as uint8, stem unfolded (ONNX Runtime's fused integer kernels)",
    "s8": "the Q/DQ file as written (ONNX Runtime runs most Convs in float between Q/DQ pairs)",
}


def _probe_model(act: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """One quantized 1x1 Conv whose uint8 x int8 products overflow 16-bit pair sums; its input
    and the exact integer result (what TensorRT computes)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    cin, cout, hw = 64, 8, 4
    dtype, zx, lo, hi = (np.uint8, 128, 0, 255) if act == "u8" else (np.int8, 0, -128, 127)
    xq = rng.integers(hi - 40, hi + 1, (1, cin, hw, hw))
    wq = rng.integers(90, 128, (cout, cin))
    sx, sw = np.float32(0.02), np.float32(0.01)
    acc = np.einsum("nchw,oc->nohw", xq - zx, wq)
    sy = np.float32(acc.max() * sx * sw / 100)
    ref = np.clip(np.rint(acc * (sx * sw) / sy) + zx, lo, hi)
    tensors = {"sx": np.array(sx), "zx": np.array(zx, dtype), "sy": np.array(sy),
               "zy": np.array(zx, dtype), "sw": np.full(cout, sw, np.float32),
               "zw": np.zeros(cout, np.int8),
               "w": (wq.reshape(cout, cin, 1, 1) * sw).astype(np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
    ]
    elem = onnx.TensorProto.UINT8 if act == "u8" else onnx.TensorProto.INT8
    graph = helper.make_graph(
        nodes,
        f"probe_{act}",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("yq", elem, None)],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, ((xq - zx) * sx).astype(np.float32), ref


def probe_int8_kernels(act: str) -> dict[str, Any]:
    """Does ONNX Runtime compute exact int8 products for ``act`` ("u8" / "s8") activations on
    this CPU? ``{"fused", "exact", "max_error_lsb"}``: fused = it ran a QLinearConv (else the
    Conv ran in float between the Q/DQ pairs), exact = within one output step of the integer
    result."""
    import tempfile

    import onnx

    model, x, ref = _probe_model(act)
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "probe.opt.onnx"
        got = make_session(model, 1, optimized_path=opt).run(None, {"x": x})[0]
        fused = any(n.op_type == "QLinearConv" for n in onnx.load(str(opt)).graph.node)
    err = int(np.abs(got.astype(np.int64) - ref).max())
    return {"fused": fused, "exact": err <= 1, "max_error_lsb": err}


def cpu_form(int8_onnx: str | Path) -> tuple[str, Any, dict[str, Any]]:
    """The fastest CPU form of a Q/DQ model whose integer kernels are exact on this CPU:
    (form, model, probe of every form tried). Falls back to the fastest form, with every probe
    inexact, when none is (the caller marks the speed not comparable)."""

    probes: dict[str, Any] = {}
    for act in INT8_FORMS:
        probes[act] = probe_int8_kernels(act)
        if probes[act]["exact"]:
            break
    chosen = next((a for a, p in probes.items() if p["exact"]), next(iter(INT8_FORMS)))
    if chosen == "u8":
        model = load_for_cpu(int8_onnx)
    else:
        model = detach_plugins(load_onnx(int8_onnx))[0]
    return chosen, model, probes


def compare_speed(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    batch: int = 1,
    warmup: int = 3,
    iterations: int = 20,
    threads: int = 0,
    spinning: bool = True,
    gap_ms: float = GAP_MS,
) -> dict[str, Any]:
    """Time fp32 and INT8 alternately; p50/p90/… of each and the speedup (fp32 p50 / INT8 p50).

    Both sessions use ONNX Runtime's default thread spinning (as a deployed session runs) and
    each timed run starts ``gap_ms`` after the previous one ended, so the other session's idle
    workers have stopped spinning and do not steal its cores (seen as a false 30 % slowdown of
    both models without the gap). ``spinning=False`` times without spinning instead: the INT8
    graph then pays more thread wake-ups (~230 nodes vs ~105 fp32). The INT8 model is timed in
    the CPU form ``cpu_form`` picks; ``comparable`` is false when that form's kernels are not
    exact on this CPU (its speed is then of a model that computes other numbers).
    """

    form, int8_model, probes = cpu_form(int8_onnx)
    comparable = probes[form]["exact"]
    sessions = {
        "fp32": make_session(load_for_cpu(fp32_onnx), threads, spinning=spinning),
        "int8": make_session(int8_model, threads, spinning=spinning),
    }
    feed = input_for(sessions["fp32"], batch)
    name = sessions["int8"].get_inputs()[0].name
    feeds = {"fp32": feed, "int8": {name: next(iter(feed.values()))}}
    for key, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[key])
    lat: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(iterations):
        for key, s in sessions.items():
            time.sleep(gap_ms / 1e3)
            t0 = time.perf_counter()
            s.run(None, feeds[key])
            lat[key].append((time.perf_counter() - t0) * 1e3)
    stats = {k: percentiles(v) for k, v in lat.items()}
    return {
        "fp32": str(fp32_onnx),
        "int8": str(int8_onnx),
        "runtime": "onnxruntime-cpu",
        "batch": batch,
        "threads": threads,
        "spinning": spinning,
        "gap_ms": gap_ms,
        "cpu": cpu_info(),
        "int8_form": form,
        "int8_form_note": INT8_FORMS[form],
        "int8_kernel_probes": probes,
        "comparable": comparable,
        "warmup": warmup,
        "iterations": iterations,
        "fp32_p50_ms": stats["fp32"]["p50_ms"],
        "int8_p50_ms": stats["int8"]["p50_ms"],
        "speedup": stats["fp32"]["p50_ms"] / stats["int8"]["p50_ms"],
        "speedup_min": stats["fp32"]["min_ms"] / stats["int8"]["min_ms"],
        "stats": stats,
        "latencies_ms": {k: [round(x, 4) for x in v] for k, v in lat.items()},
    }


def speedup_table(report: dict[str, Any]) -> str:
    """Markdown table of one compare_speed report."""
    rows = ["| model | p50 ms | p90 ms | min ms |", "|---|---|---|---|"]
    for key in ("fp32", "int8"):
        s = report["stats"][key]
        rows.append(f"| {key} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} |")
    return "\n".join(rows) + "\n"


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

    from trtflow.onnx.patches.graph import node_attr

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
