"""YOLOv5 head patches: box units, a lean decode, the EfficientNMS_TRT plugin."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

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
