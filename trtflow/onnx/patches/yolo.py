"""YOLOv5 head patches: box units, the decode rebuilt per head (lean_decode, fold_decode), the
EfficientNMS_TRT plugin."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from trtflow.core.errors import TrtflowError
from trtflow.onnx.patches.graph import (
    _count,
    _fmt_shape,
    _name,
    _np_dtype,
    _single_output,
    node_attr,
)
from trtflow.onnx.patches.layout import _detection_layout
from trtflow.onnx.patches.registry import PatchOptions, _change, register
from trtflow.onnx.plugins import NMS_BOXES, NMS_OP, NMS_OUTPUTS, NMS_SCORES

log = logging.getLogger(__name__)


@register("denormalize_boxes")
def denormalize_boxes(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Scale normalised (0-1) xywh of the [B,N,5+C] output to pixels of the image size.

    Appends ``Mul(output, [s,s,s,s,1,...,1])``; the output keeps its name.
    """
    patch = "denormalize_boxes"
    mul_name = _name(patch, "mul")
    if any(node.name == mul_name for node in graph.nodes):
        log.info("%s: already applied (%s exists): left as is", patch, mul_name)
        return graph
    out = _single_output(graph, patch)
    channels, _ = _detection_layout(out, patch, options)
    dtype = _np_dtype(out) or np.dtype(np.float32)
    scale = np.ones(channels, dtype=dtype)
    scale[:4] = options.image_size
    name = out.name
    out.name = _name(patch, "normalized")
    pixels = gs.Variable(name, dtype=out.dtype, shape=list(out.shape))
    graph.nodes.append(
        gs.Node(
            "Mul",
            name=mul_name,
            inputs=[out, gs.Constant(_name(patch, "scale"), scale)],
            outputs=[pixels],
        )
    )
    graph.outputs[0] = pixels
    _change(patch, f"output {name!r}: xywh * {options.image_size} (normalised -> pixels)")
    return graph


def _decode_layout(model: onnx.ModelProto) -> dict[str, Any] | None:
    """Find the YOLOv5 decode tail tf2onnx makes of trtflow's builtin Keras model, or None.

    Per head: Transpose(0,2,3,1) -> Reshape [-1,HW,na,no] -> Transpose(0,2,1,3) -> Reshape
    [-1,na*HW,no]; then Concat(axis 1) -> Sigmoid -> Slice xy / wh / rest -> xy*k+a, (wh*wh)*k
    -> Concat(axis 2) = the single graph output.
    """
    from onnx import numpy_helper

    g = model.graph
    if len(g.output) != 1:
        return None
    prod = {o: n for n in g.node for o in n.output}
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def node(name: str, op: str) -> onnx.NodeProto | None:
        n = prod.get(name)
        return n if n is not None and n.op_type == op else None

    out = g.output[0].name
    cat1 = node(out, "Concat")
    if cat1 is None or node_attr(cat1, "axis") not in (2, -1) or len(cat1.input) != 3:
        return None
    add, mul_wh, rest = (
        node(cat1.input[0], "Add"),
        node(cat1.input[1], "Mul"),
        node(cat1.input[2], "Slice"),
    )
    if add is None or mul_wh is None or rest is None:
        return None
    mul_xy, square = node(add.input[0], "Mul"), node(mul_wh.input[0], "Mul")
    if mul_xy is None or square is None or square.input[0] != square.input[1]:
        return None
    consts = [mul_xy.input[1], add.input[1], mul_wh.input[1]]
    if not all(c in init and init[c].ndim == 2 and init[c].shape[1] == 2 for c in consts):
        return None
    sig = node(rest.input[0], "Sigmoid")
    xy_slice, wh_slice = node(mul_xy.input[0], "Slice"), node(square.input[0], "Slice")
    if sig is None or xy_slice is None or wh_slice is None:
        return None
    if xy_slice.input[0] != sig.output[0] or wh_slice.input[0] != sig.output[0]:
        return None
    cat0 = node(sig.input[0], "Concat")
    if cat0 is None or node_attr(cat0, "axis") not in (1, -2):
        return None
    heads = []
    for r in cat0.input:
        r2 = node(r, "Reshape")
        t2 = node(r2.input[0], "Transpose") if r2 is not None else None
        r1 = node(t2.input[0], "Reshape") if t2 is not None else None
        t1 = node(r1.input[0], "Transpose") if r1 is not None else None
        if (
            t1 is None
            or node_attr(t1, "perm") != [0, 2, 3, 1]
            or node_attr(t2, "perm") != [0, 2, 1, 3]
        ):
            return None
        shape = init.get(r1.input[1])
        if shape is None or shape.shape != (4,):
            return None
        hw, na, no = (int(v) for v in shape[1:])
        heads.append({"x": t1.input[0], "hw": hw, "na": na, "no": no})
    rows = sum(h["na"] * h["hw"] for h in heads)
    if any(init[c].shape[0] != rows for c in consts) or len({h["no"] for h in heads}) != 1:
        return None
    k_xy, a_xy, k_wh = (init[c] for c in consts)
    return {"heads": heads, "k_xy": k_xy, "a_xy": a_xy, "k_wh": k_wh, "output": out}


def _lean_decode_model(model: onnx.ModelProto, layout: dict[str, Any]) -> onnx.ModelProto:
    """Rebuild the decode per head in the heads' own layout (see ``lean_decode``)."""
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    prod = {o: n for n in g.node for o in n.output}
    stop = {h["x"] for h in layout["heads"]}
    dead: set[int] = set()  # id() of the old decode's nodes
    stack = [layout["output"]]
    while stack:  # the old decode: every node between the heads' outputs and the graph output
        n = prod.get(stack.pop())
        if n is None or id(n) in dead:
            continue
        dead.add(id(n))
        stack.extend(i for i in n.input if i and i not in stop)
    keep = [n for n in g.node if id(n) not in dead]
    del g.node[:]
    g.node.extend(keep)
    outs, row = [], 0
    for k, h in enumerate(layout["heads"]):
        na, hw, no = h["na"], h["hw"], h["no"]
        q = f"trtflow/lean_decode/head{k}/"
        rows = slice(row, row + na * hw)
        row += na * hw

        def block(table: np.ndarray, rows: slice = rows, na: int = na, hw: int = hw) -> np.ndarray:
            """Rows of one head's [na*HW, 2] table as [1, na, 2, HW] (broadcast over batch)."""
            return np.ascontiguousarray(table[rows].reshape(na, hw, 2).transpose(0, 2, 1)[None])

        g.initializer.extend([
            numpy_helper.from_array(np.array([0, na, no, hw], np.int64), q + "shape_split"),
            numpy_helper.from_array(np.array([0, na * hw, no], np.int64), q + "shape_out"),
            numpy_helper.from_array(np.array([2, 2, no - 4], np.int64), q + "split"),
            numpy_helper.from_array(block(layout["k_xy"]), q + "k_xy"),
            numpy_helper.from_array(block(layout["a_xy"]), q + "a_xy"),
            numpy_helper.from_array(block(layout["k_wh"]), q + "k_wh"),
        ])  # fmt: skip

        def mk(op: str, ins: list[str], outs: list[str], q: str = q, **attrs: Any) -> Any:
            return helper.make_node(op, [q + i for i in ins], [q + o for o in outs], q + outs[0],
                                    **attrs)  # fmt: skip

        g.node.extend([
            helper.make_node("Sigmoid", [h["x"]], [q + "sigmoid"], q + "sigmoid"),
            mk("Reshape", ["sigmoid", "shape_split"], ["grid"]),  # [B, na, no, HW]
            mk("Split", ["grid", "split"], ["xy", "wh", "conf"], axis=2),
            mk("Mul", ["xy", "k_xy"], ["xy_scaled"]),
            mk("Add", ["xy_scaled", "a_xy"], ["xy_px"]),
            mk("Mul", ["wh", "wh"], ["wh_squared"]),
            mk("Mul", ["wh_squared", "k_wh"], ["wh_px"]),
            mk("Concat", ["xy_px", "wh_px", "conf"], ["decoded"], axis=2),
            mk("Transpose", ["decoded"], ["rows"], perm=[0, 1, 3, 2]),  # [B, na, HW, no]
            mk("Reshape", ["rows", "shape_out"], ["out"]),  # [B, na*HW, no]
        ])  # fmt: skip
        outs.append(q + "out")
    g.node.append(
        helper.make_node("Concat", outs, [layout["output"]], "trtflow/lean_decode/concat", axis=1)
    )
    return m


@register("lean_decode")
def lean_decode(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Rebuild trtflow's YOLOv5 decode per head without the transpose/slice/concat round trips.

    tf2onnx's decode of the builtin model transposes each head to NHWC, reshapes, transposes
    again, concatenates all heads, applies one Sigmoid and slices the [B,N,5+C] result into
    xy / wh / rest for the arithmetic before concatenating it again — three full copies of the
    largest tensor. Per head it becomes Sigmoid -> Reshape [B,na,5+C,HW] -> Split -> the same
    xy*k+a and (wh*wh)*k with the same constants -> Concat -> one Transpose -> Reshape, then one
    Concat of the heads: the same operations on the same values, so the output is bit-identical
    (ONNX Runtime CPU: ~1-2 ms less at 640). Other decode layouts are left as they are.
    """
    patch = "lean_decode"
    if options.decode_layout not in (None, "anchor_y_x"):
        log.info(
            "%s: decode rows are ordered %s (export_pb), not trtflow's builtin anchor_y_x; "
            "left as is",
            patch,
            options.decode_layout,
        )
        return graph
    model = gs.export_onnx(graph)
    layout = _decode_layout(model)
    if layout is None:
        log.info("%s: no decode of trtflow's builtin YOLOv5 layout found; left as is", patch)
        return graph
    before = len(model.graph.node)
    lean = _lean_decode_model(model, layout)
    _change(
        patch,
        f"decode of {len(layout['heads'])} heads rebuilt per head: {before} -> "
        f"{len(lean.graph.node)} nodes, Transpose {_count(model, 'Transpose')} -> "
        f"{_count(lean, 'Transpose')}, Slice {_count(model, 'Slice')} -> {_count(lean, 'Slice')}",
    )
    graph = gs.import_onnx(lean)
    graph.cleanup().toposort()
    return graph


@register("efficient_nms")
def efficient_nms(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Split the [B,N,5+C] output into boxes/scores and append TensorRT's EfficientNMS_TRT plugin.

    boxes = xywh ``[B,N,4]`` (box_coding 1, center-size), scores = obj * class ``[B,N,C]``
    (score_activation 0: already sigmoided). The outputs become num_dets ``[B,1]`` int32,
    det_boxes ``[B,K,4]``, det_scores ``[B,K]`` and det_classes ``[B,K]`` int32, K =
    max_detections. ONNX Runtime cannot run the plugin: check parity on ``strip_nms(model)``.
    """
    patch = "efficient_nms"
    out = _single_output(graph, patch)
    channels, num_classes = _detection_layout(out, patch, options)
    batch, boxes_n = out.shape[0], out.shape[1]
    taken = set(graph.tensors())
    clash = [n for n in (*NMS_OUTPUTS, NMS_BOXES, NMS_SCORES) if n in taken]
    if clash:
        raise TrtflowError(
            f"{patch}: tensor name(s) {', '.join(clash)} already exist",
            "apply efficient_nms once, and rename_io to names other than the NMS outputs",
        )
    dtype = out.dtype

    def channel_slice(part: str, start: int, end: int) -> gs.Variable:
        result = gs.Variable(
            _name(patch, part) if part != "boxes" else NMS_BOXES,
            dtype=dtype,
            shape=[batch, boxes_n, end - start],
        )
        graph.nodes.append(
            gs.Node(
                "Slice",
                name=_name(patch, "slice_" + part),
                inputs=[
                    out,
                    gs.Constant(_name(patch, part, "starts"), np.array([start], np.int64)),
                    gs.Constant(_name(patch, part, "ends"), np.array([end], np.int64)),
                    gs.Constant(_name(patch, part, "axes"), np.array([2], np.int64)),
                ],
                outputs=[result],
            )
        )
        return result

    boxes = channel_slice("boxes", 0, 4)
    objectness = channel_slice("objectness", 4, 5)
    classes = channel_slice("class_scores", 5, channels)
    scores = gs.Variable(NMS_SCORES, dtype=dtype, shape=[batch, boxes_n, num_classes])
    graph.nodes.append(
        gs.Node("Mul", name=_name(patch, "scores"), inputs=[objectness, classes], outputs=[scores])
    )
    k = options.max_detections
    outputs = [
        gs.Variable(NMS_OUTPUTS[0], dtype=np.int32, shape=[batch, 1]),
        gs.Variable(NMS_OUTPUTS[1], dtype=np.float32, shape=[batch, k, 4]),
        gs.Variable(NMS_OUTPUTS[2], dtype=np.float32, shape=[batch, k]),
        gs.Variable(NMS_OUTPUTS[3], dtype=np.int32, shape=[batch, k]),
    ]
    graph.nodes.append(
        gs.Node(
            NMS_OP,
            name=_name(patch, "plugin"),
            attrs={
                "plugin_version": "1",
                "background_class": -1,
                "max_output_boxes": k,
                "score_threshold": float(options.score_threshold),
                "iou_threshold": float(options.iou_threshold),
                "score_activation": 0,
                "box_coding": 1,
            },
            inputs=[boxes, scores],
            outputs=outputs,
        )
    )
    graph.outputs = outputs
    _change(
        patch,
        f"output {out.name!r} {_fmt_shape(out.shape)} -> boxes {_fmt_shape(boxes.shape)} + "
        f"scores {_fmt_shape(scores.shape)} -> {NMS_OP}(K={k}, score>{options.score_threshold}, "
        f"iou>{options.iou_threshold}) -> {', '.join(NMS_OUTPUTS)}",
    )
    graph.toposort()
    return graph


# ---------------------------------------------------------------------------------------------
# Patch ``fold_decode``: any YOLOv5 decode tail rebuilt per head from constants measured on it.
#
# ``lean_decode`` recognises the exact node pattern tf2onnx makes of trtflow's builtin model. Other
# TF exporters write the same decode differently — rows ordered (y, x, anchor), strided slices of
# the last axis, ``Pow``, boxes divided by the image size and multiplied back by
# ``denormalize_boxes`` — so no pattern covers them all. This patch reads the decode off the graph
# instead of its node pattern:
#
# 1. **Find the tail**: every node between the last Convs (the head maps ``[B, na*no, H, W]``)
#    and the single ``[B, N, no]`` output (``trtflow.quant.qdq.decode_nodes`` walks the same).
# 2. **Measure it** with ONNX Runtime on the tail alone (no graph optimisation): head maps whose
#    objectness logits count up give each row's (head, anchor, cell), hence the row order
#    (``anchor_y_x`` or ``y_x_anchor``); maps set to one logit per run give, per row and box
#    field, ``xy = s*K + C`` and ``wh = (s*s)*Q`` (``s`` the sigmoid) — a least-squares fit
#    snapped to the float32 constants that reproduce the tail's outputs.
# 3. **Rebuild** per head: Sigmoid -> Reshape ``[B,na,no,HW]`` -> Split -> ``xy*K+C``,
#    ``(wh*wh)*Q`` -> Concat -> one Transpose into the measured row order -> Reshape, then one
#    Concat of the heads. Constants are stored at the smallest shape that broadcasts to them.
# 4. **Check** the rebuilt tail against the old one on random head maps (both batch sizes):
#    scores must match exactly, boxes within ``FOLD_BOX_TOLERANCE`` of the image size; otherwise the
#    graph is left as it was, with a log line.
#
# On trtflow's builtin layout the result is the same graph as ``lean_decode``'s and bit-identical;
# on the (y, x, anchor) layout it drops the Slices, the Pow and the full-tensor denormalising Mul.
# ---------------------------------------------------------------------------------------------
_FOLD = "fold_decode"
#: Largest box error (as a fraction of the image size) the rebuilt decode may make; parity's
#: default tolerance is 1e-3 of it, so this leaves parity where it was.
FOLD_BOX_TOLERANCE = 1e-5
#: The two row orders a head can have (``trtflow.tf.discover.DECODE_LAYOUTS``) and the Transpose
#: that puts ``[B, na, no, HW]`` into each.
ROW_ORDERS = {"anchor_y_x": [0, 1, 3, 2], "y_x_anchor": [0, 3, 1, 2]}
_PROBE_LOGITS = np.linspace(-4.0, 4.0, 9)
_INDEX_RANGE = 6.0  # objectness logits of the row-index probe lie in [-6, 6]


@dataclass(frozen=True)
class DecodeHead:
    """One detection level as the tail sees it."""

    tensor: str  # the head map, [B, na*no, H, W]
    na: int
    hw: int
    first_row: int  # where its rows start in the output
    order: str  # a ROW_ORDERS key


@dataclass(frozen=True)
class DecodeTail:
    """The decode tail of a model: its nodes, head maps and output."""

    nodes: list[onnx.NodeProto]
    heads: list[str]
    output: str
    no: int


def find_decode_tail(model: onnx.ModelProto) -> DecodeTail | None:
    """The nodes between the last Convs and the single ``[B, N, no]`` output, or None."""
    g = model.graph
    if len(g.output) != 1:
        return None
    dims = g.output[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[2].HasField("dim_value"):
        return None
    prod = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    nodes: dict[int, onnx.NodeProto] = {}
    heads: list[str] = []
    stack = [g.output[0].name]
    while stack:
        name = stack.pop()
        if not name or name in inits:
            continue
        if name in graph_inputs:
            return None  # the output depends on the input other than through a Conv
        n = prod[name]
        if n.op_type == "Conv":
            if name not in heads:
                heads.append(name)
            continue
        if id(n) not in nodes:
            nodes[id(n)] = n
            stack.extend(n.input)
    if not heads:
        return None
    order = {id(n): i for i, n in enumerate(g.node)}
    ordered = sorted(nodes.values(), key=lambda n: order[id(n)])
    return DecodeTail(ordered, heads, g.output[0].name, int(dims[2].dim_value))


def _shapes(model: onnx.ModelProto) -> dict[str, list[Any]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out: dict[str, list[Any]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def decode_tail_model(
    model: onnx.ModelProto, tail: DecodeTail, head_shapes: dict[str, list[Any]]
) -> onnx.ModelProto:
    """The tail alone as a model whose inputs are the head maps (batch symbolic)."""
    used = {i for n in tail.nodes for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    inputs = [
        helper.make_tensor_value_info(h, onnx.TensorProto.FLOAT, ["B", *head_shapes[h][1:]])
        for h in tail.heads
    ]
    out = helper.make_tensor_value_info(tail.output, onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(tail.nodes, "decode_tail", inputs, [out], inits)
    m = helper.make_model(graph, opset_imports=model.opset_import)
    m.ir_version = model.ir_version
    return m


def _tail_session(model: onnx.ModelProto) -> Any:
    from trtflow.onnx.ort import make_session

    return make_session(model, threads=1, exact=True)


def _run_tail(session: Any, maps: dict[str, np.ndarray]) -> np.ndarray:
    """The tail's output for these head maps (batch 1 or the model's fixed batch)."""
    return session.run(None, maps)[0]


def _head_rows(
    session: Any, heads: list[str], shapes: dict[str, list[Any]], na: int, no: int
) -> list[DecodeHead] | None:
    """Which output rows each head's (anchor, cell) lands in, from objectness logits that count
    up over (head, anchor, cell): a head is one block of rows in one of ROW_ORDERS, or None."""
    sizes = [na * shapes[h][2] * shapes[h][3] for h in heads]
    logits = np.linspace(-_INDEX_RANGE, _INDEX_RANGE, sum(sizes))
    maps, k = {}, 0
    for h, size in zip(heads, sizes, strict=True):
        _, c, hh, ww = shapes[h]
        m = np.zeros((1, na, no, hh * ww), np.float32)
        m[0, :, 4, :] = logits[k : k + size].reshape(na, hh * ww)
        maps[h] = np.repeat(m.reshape(1, c, hh, ww), shapes[h][0] or 1, axis=0)
        k += size
    score = _run_tail(session, maps)[0, :, 4]
    if score.shape[0] != sum(sizes):
        return None
    rows = np.argsort(score, kind="stable")  # rows[i]: the output row of index i
    if np.any(np.diff(score[rows]) <= 0):
        return None  # objectness is not a monotonic function of its own logit alone
    found, k = [], 0
    for h, size in zip(heads, sizes, strict=True):
        block = rows[k : k + size]
        k += size
        start, hw = int(block.min()), shapes[h][2] * shapes[h][3]
        a, cell = np.divmod(np.arange(size), hw)
        for order, want in (("anchor_y_x", a * hw + cell), ("y_x_anchor", cell * na + a)):
            if np.array_equal(block - start, want):
                found.append(DecodeHead(h, na, hw, start, order))
                break
        else:
            return None
    return sorted(found, key=lambda head: head.first_row)


def _trailing_zeros(x: np.ndarray) -> np.ndarray:
    """Trailing zero bits of each float32's bit pattern (32 for 0.0): more = a simpler number."""
    bits = x.view(np.uint32).astype(np.int64)
    low = bits & -bits  # lowest set bit
    return np.where(bits == 0, 32, np.log2(np.maximum(low, 1)).astype(np.int64))


def _snap(fit: np.ndarray, target: np.ndarray, evaluate: Any, ulps: int = 64) -> np.ndarray:
    """Per element, the float32 within ``ulps`` of ``fit`` whose ``evaluate`` is closest to
    ``target`` over all probes; among equally close ones the simplest (most trailing zero
    bits), since a least-squares fit cannot tell apart constants that round alike, and the
    exporter's own (2 * stride, (cell - 0.5) * stride, 4 * anchor) are short binary numbers."""
    base = fit.astype(np.float32)
    best, err, zeros = base, np.full(base.shape, np.inf), np.full(base.shape, -1)
    up, down = base, base
    for step in range(ulps + 1):
        for cand in (up, down) if step else (base,):
            e = np.max(np.abs(evaluate(cand) - target), axis=0)
            z = _trailing_zeros(cand)
            better = (e < err) | ((e == err) & (z > zeros))
            best = np.where(better, cand, best)
            err, zeros = np.where(better, e, err), np.where(better, z, zeros)
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
    return best


def _decode_constants(session: Any, heads: list[DecodeHead], shapes: dict[str, list[Any]], no: int):
    """``K, C`` of xy and ``Q`` of wh per output row, each [N, 2] float32, and the sigmoid
    values used, from runs with every logit equal; None if the conf fields are not sigmoid."""
    outs, sig = [], []
    for z in _PROBE_LOGITS:
        maps = {
            h.tensor: np.full([shapes[h.tensor][0] or 1, *shapes[h.tensor][1:]], z, np.float32)
            for h in heads
        }
        y = _run_tail(session, maps)[0].astype(np.float64)
        outs.append(y)
        sig.append(y[0, 4])
    y = np.stack(outs)  # [levels, N, no]
    s = np.asarray(sig)
    s32 = s.astype(np.float32)
    if not np.all(y[:, :, 4:] == s[:, None, None]):
        return None  # scores are not the plain sigmoid of their logit
    v = np.stack([np.ones_like(s), s], 1)  # xy = K*s + C
    (c_fit, k_fit), *_ = np.linalg.lstsq(v, y[:, :, 0:2].reshape(len(s), -1), rcond=None)
    q_fit = (y[:, :, 2:4].reshape(len(s), -1) * (s * s)[:, None]).sum(0) / (s**4).sum()
    xy = y[:, :, 0:2].reshape(len(s), -1).astype(np.float32)
    wh = y[:, :, 2:4].reshape(len(s), -1).astype(np.float32)
    k = _snap(k_fit, xy, lambda kk: s32[:, None] * kk + c_fit.astype(np.float32))
    c = _snap(c_fit, xy, lambda cc: s32[:, None] * k + cc)
    q = _snap(q_fit, wh, lambda qq: (s32 * s32)[:, None] * qq)
    n = y.shape[1]
    return k.reshape(n, 2), c.reshape(n, 2), q.reshape(n, 2)


def _per_head_table(table: np.ndarray, head: DecodeHead) -> np.ndarray:
    """One head's rows of an [N, 2] table as [1, na, 2, HW], shrunk along axes that repeat."""
    rows = table[head.first_row : head.first_row + head.na * head.hw]
    if head.order == "anchor_y_x":
        block = rows.reshape(head.na, head.hw, 2).transpose(0, 2, 1)
    else:
        block = rows.reshape(head.hw, head.na, 2).transpose(1, 2, 0)
    for axis in (0, 2):
        if np.all(block == block.take([0], axis=axis)):
            block = block.take([0], axis=axis)
    return np.ascontiguousarray(block[None])


def _fold_decode_model(
    model: onnx.ModelProto, tail: DecodeTail, heads: list[DecodeHead], consts: tuple, no: int
) -> onnx.ModelProto:
    """The model with its tail replaced by the per-head decode (module docstring, step 3)."""
    k_xy, c_xy, q_wh = consts
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    dead = {o for n in tail.nodes for o in n.output}
    keep = [n for n in g.node if not dead.intersection(n.output)]
    del g.node[:]
    g.node.extend(keep)
    outs = []
    for i, h in enumerate(heads):
        q = f"trtflow/{_FOLD}/head{i}/"
        g.initializer.extend([
            numpy_helper.from_array(np.array([0, h.na, no, h.hw], np.int64), q + "shape_split"),
            numpy_helper.from_array(np.array([0, h.na * h.hw, no], np.int64), q + "shape_out"),
            numpy_helper.from_array(np.array([2, 2, no - 4], np.int64), q + "split"),
            numpy_helper.from_array(_per_head_table(k_xy, h), q + "k_xy"),
            numpy_helper.from_array(_per_head_table(c_xy, h), q + "c_xy"),
            numpy_helper.from_array(_per_head_table(q_wh, h), q + "q_wh"),
        ])  # fmt: skip

        def mk(op: str, ins: list[str], outs_: list[str], q: str = q, **attrs: Any) -> Any:
            return helper.make_node(op, [q + x for x in ins], [q + o for o in outs_], q + outs_[0],
                                    **attrs)  # fmt: skip

        g.node.extend([
            helper.make_node("Sigmoid", [h.tensor], [q + "sigmoid"], q + "sigmoid"),
            mk("Reshape", ["sigmoid", "shape_split"], ["grid"]),  # [B, na, no, HW]
            mk("Split", ["grid", "split"], ["xy", "wh", "conf"], axis=2),
            mk("Mul", ["xy", "k_xy"], ["xy_scaled"]),
            mk("Add", ["xy_scaled", "c_xy"], ["xy_px"]),
            mk("Mul", ["wh", "wh"], ["wh_squared"]),
            mk("Mul", ["wh_squared", "q_wh"], ["wh_px"]),
            mk("Concat", ["xy_px", "wh_px", "conf"], ["decoded"], axis=2),
            mk("Transpose", ["decoded"], ["rows"], perm=ROW_ORDERS[h.order]),
            mk("Reshape", ["rows", "shape_out"], ["out"]),  # [B, rows of this head, no]
        ])  # fmt: skip
        outs.append(q + "out")
    concat = helper.make_node("Concat", outs, [tail.output], f"trtflow/{_FOLD}/concat", axis=1)
    g.node.append(concat)
    return m


def _compare_tails(old: Any, new: Any, shapes: dict[str, list[Any]], heads: list[str]):
    """(max box error in pixels, max score error) of the new tail against the old one, on
    random head maps (batch 1 and 2, or the model's fixed batch)."""
    rng = np.random.default_rng(0)
    box = score = 0.0
    fixed = shapes[heads[0]][0]
    for batch in (fixed,) if fixed else (1, 2):
        maps = {h: rng.normal(0.0, 3.0, [batch, *shapes[h][1:]]).astype(np.float32) for h in heads}
        a, b = _run_tail(old, maps), _run_tail(new, maps)
        if a.shape != b.shape:
            return np.inf, np.inf
        box = max(box, float(np.max(np.abs(a[..., :4] - b[..., :4]))))
        score = max(score, float(np.max(np.abs(a[..., 4:] - b[..., 4:]))))
    return box, score


@register(_FOLD)
def fold_decode(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Rebuild any YOLOv5 decode tail per head (either row order) from constants measured on it.

    Finds the nodes between the head Convs and the output, measures with ONNX Runtime which
    row each (head, anchor, cell) lands in and the xy/wh constants of every row (grid, stride,
    anchors and any scaling by the image size, e.g. ``denormalize_boxes``, folded in), then
    writes per head Sigmoid -> Reshape -> Split -> xy*K+C, (wh*wh)*Q -> Concat -> one Transpose
    -> Reshape and one Concat of the heads. Bit-identical on trtflow's builtin layout (the same
    graph as ``lean_decode``); on the (y, x, anchor) layout of other TF exporters within 1e-5 of
    the image size; a tail that does not check out is left as it is, with a log line.
    """
    model = gs.export_onnx(graph)
    tail = find_decode_tail(model)
    if tail is None:
        log.info("%s: no decode tail (head Convs -> one [B,N,no] output) found; left as is", _FOLD)
        return graph
    shapes = _shapes(model)
    found = [shapes.get(h) for h in tail.heads]
    hs = [s for s in found if s is not None and len(s) == 4 and None not in s[1:]]
    if len(hs) != len(found):
        log.info("%s: head maps %s are not static [B,C,H,W]; left as is", _FOLD, tail.heads)
        return graph
    no = tail.no
    if no < 6 or any(s[1] % no for s in hs) or len({s[1] // no for s in hs}) != 1:
        log.info("%s: head maps %s are not [B, na*%d, H, W]; left as is", _FOLD, hs, no)
        return graph
    na = hs[0][1] // no
    try:
        old = _tail_session(decode_tail_model(model, tail, shapes))
        heads = _head_rows(old, tail.heads, shapes, na, no)
        if heads is None:
            log.info("%s: rows are neither %s per head; left as is", _FOLD,
                     " nor ".join(ROW_ORDERS))  # fmt: skip
            return graph
        consts = _decode_constants(old, heads, shapes, no)
        if consts is None:
            log.info("%s: scores are not the sigmoid of their logits; left as is", _FOLD)
            return graph
        lean = _fold_decode_model(model, tail, heads, consts, no)
        new_tail = find_decode_tail(lean)
        if new_tail is None:  # cannot happen for a graph _fold_decode_model() wrote
            raise TrtflowError(f"{_FOLD}: the rebuilt decode has no tail", "report this as a bug")
        new = _tail_session(decode_tail_model(lean, new_tail, shapes))
        box, score = _compare_tails(old, new, shapes, tail.heads)
    except TrtflowError:
        raise
    except Exception as err:  # ONNX Runtime cannot run the tail alone (e.g. a pinned batch)
        log.info("%s: the decode tail does not run on its own (%s); left as is", _FOLD,
                 str(err).strip().splitlines()[0][:200])  # fmt: skip
        return graph
    orders = sorted({h.order for h in heads})
    if box > FOLD_BOX_TOLERANCE * options.image_size or score > 0:
        log.info(
            "%s: rebuilt %s decode differs from the original (boxes %.3g px, scores %.3g); "
            "left as is",
            _FOLD,
            "/".join(orders),
            box,
            score,
        )
        return graph
    if options.decode_layout not in (None, *orders):
        log.warning("%s: export_pb recorded %s, the graph's rows are %s", _FOLD,
                    options.decode_layout, "/".join(orders))  # fmt: skip
    count = {op: sum(n.op_type == op for n in tail.nodes) for op in ("Transpose", "Slice", "Pow")}
    _change(
        _FOLD,
        f"decode of {len(heads)} heads ({'/'.join(orders)}) rebuilt per head: "
        f"{len(tail.nodes)} -> {len(new_tail.nodes)} tail nodes, Transpose {count['Transpose']} "
        f"-> {len(heads)}, Slice {count['Slice']} -> 0, Pow {count['Pow']} -> 0; "
        + ("bit-identical" if box == 0 else f"boxes within {box:.2g} px"),
    )
    graph = gs.import_onnx(lean)
    graph.cleanup().toposort()
    return graph
