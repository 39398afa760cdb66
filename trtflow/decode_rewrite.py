"""Patch ``fold_decode``: any YOLOv5 decode tail rebuilt per head from constants measured on it.

``lean_decode`` recognises the exact node pattern tf2onnx makes of trtflow's builtin model. Other
TF exporters write the same decode differently — rows ordered (y, x, anchor), strided slices of
the last axis, ``Pow``, boxes divided by the image size and multiplied back by
``denormalize_boxes`` — so no pattern covers them all. This patch reads the decode off the graph
instead of its node pattern:

1. **Find the tail**: every node between the last Convs (the head maps ``[B, na*no, H, W]``)
   and the single ``[B, N, no]`` output (the walk ``trtflow.quantize.decode_nodes`` also makes).
2. **Measure it** with ONNX Runtime on the tail alone (no graph optimisation): head maps whose
   objectness logits count up give each row's (head, anchor, cell), hence the row order
   (``anchor_y_x`` or ``y_x_anchor``); maps set to one logit per run give, per row and box
   field, ``xy = s*K + C`` and ``wh = (s*s)*Q`` (``s`` the sigmoid) — a least-squares fit
   snapped to the float32 constants that reproduce the tail's outputs.
3. **Rebuild** per head: Sigmoid -> Reshape ``[B,na,no,HW]`` -> Split -> ``xy*K+C``,
   ``(wh*wh)*Q`` -> Concat -> one Transpose into the measured row order -> Reshape, then one
   Concat of the heads. Constants are stored at the smallest shape that broadcasts to them.
4. **Check** the rebuilt tail against the old one on random head maps (both batch sizes):
   scores must match exactly, boxes within ``BOX_TOLERANCE`` of the image size; otherwise the
   graph is left as it was, with a log line.

On trtflow's builtin layout the result is the same graph as ``lean_decode``'s and bit-identical;
on the (y, x, anchor) layout it drops the Slices, the Pow and the full-tensor denormalising Mul.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from trtflow.errors import TrtflowError
from trtflow.patches import PatchOptions, _change, register

log = logging.getLogger(__name__)

PATCH = "fold_decode"
#: Largest box error (as a fraction of the image size) the rebuilt decode may make; parity's
#: default tolerance is 1e-3 of it, so this leaves parity where it was.
BOX_TOLERANCE = 1e-5
#: The two row orders a head can have (``trtflow.discover.DECODE_LAYOUTS``) and the Transpose
#: that puts ``[B, na, no, HW]`` into each.
ROW_ORDERS = {"anchor_y_x": [0, 1, 3, 2], "y_x_anchor": [0, 3, 1, 2]}
_PROBE_LOGITS = np.linspace(-4.0, 4.0, 9)
_INDEX_RANGE = 6.0  # objectness logits of the row-index probe lie in [-6, 6]


@dataclass(frozen=True)
class Head:
    """One detection level as the tail sees it."""

    tensor: str  # the head map, [B, na*no, H, W]
    na: int
    hw: int
    first_row: int  # where its rows start in the output
    order: str  # a ROW_ORDERS key


@dataclass(frozen=True)
class Tail:
    """The decode tail of a model: its nodes, head maps and output."""

    nodes: list[onnx.NodeProto]
    heads: list[str]
    output: str
    no: int


def find_tail(model: onnx.ModelProto) -> Tail | None:
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
    return Tail(ordered, heads, g.output[0].name, int(dims[2].dim_value))


def _shapes(model: onnx.ModelProto) -> dict[str, list[Any]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out: dict[str, list[Any]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def tail_model(
    model: onnx.ModelProto, tail: Tail, head_shapes: dict[str, list[Any]]
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


def _session(model: onnx.ModelProto) -> Any:
    from trtflow.bench import make_session

    return make_session(model, threads=1, exact=True)


def _run(session: Any, maps: dict[str, np.ndarray]) -> np.ndarray:
    """The tail's output for these head maps (batch 1 or the model's fixed batch)."""
    return session.run(None, maps)[0]


def _head_rows(
    session: Any, heads: list[str], shapes: dict[str, list[Any]], na: int, no: int
) -> list[Head] | None:
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
    score = _run(session, maps)[0, :, 4]
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
                found.append(Head(h, na, hw, start, order))
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


def _constants(session: Any, heads: list[Head], shapes: dict[str, list[Any]], no: int):
    """``K, C`` of xy and ``Q`` of wh per output row, each [N, 2] float32, and the sigmoid
    values used, from runs with every logit equal; None if the conf fields are not sigmoid."""
    outs, sig = [], []
    for z in _PROBE_LOGITS:
        maps = {h.tensor: np.full([shapes[h.tensor][0] or 1, *shapes[h.tensor][1:]], z, np.float32) for h in heads}
        y = _run(session, maps)[0].astype(np.float64)
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


def _per_head(table: np.ndarray, head: Head) -> np.ndarray:
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


def rebuild(
    model: onnx.ModelProto, tail: Tail, heads: list[Head], consts: tuple, no: int
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
        q = f"trtflow/{PATCH}/head{i}/"
        g.initializer.extend([
            numpy_helper.from_array(np.array([0, h.na, no, h.hw], np.int64), q + "shape_split"),
            numpy_helper.from_array(np.array([0, h.na * h.hw, no], np.int64), q + "shape_out"),
            numpy_helper.from_array(np.array([2, 2, no - 4], np.int64), q + "split"),
            numpy_helper.from_array(_per_head(k_xy, h), q + "k_xy"),
            numpy_helper.from_array(_per_head(c_xy, h), q + "c_xy"),
            numpy_helper.from_array(_per_head(q_wh, h), q + "q_wh"),
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
    g.node.append(helper.make_node("Concat", outs, [tail.output], f"trtflow/{PATCH}/concat", axis=1))
    return m


def _compare(old: Any, new: Any, shapes: dict[str, list[Any]], heads: list[str]):
    """(max box error in pixels, max score error) of the new tail against the old one, on
    random head maps (batch 1 and 2, or the model's fixed batch)."""
    rng = np.random.default_rng(0)
    box = score = 0.0
    fixed = shapes[heads[0]][0]
    for batch in (fixed,) if fixed else (1, 2):
        maps = {
            h: rng.normal(0.0, 3.0, [batch, *shapes[h][1:]]).astype(np.float32) for h in heads
        }
        a, b = _run(old, maps), _run(new, maps)
        if a.shape != b.shape:
            return np.inf, np.inf
        box = max(box, float(np.max(np.abs(a[..., :4] - b[..., :4]))))
        score = max(score, float(np.max(np.abs(a[..., 4:] - b[..., 4:]))))
    return box, score


@register(PATCH)
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
    tail = find_tail(model)
    if tail is None:
        log.info("%s: no decode tail (head Convs -> one [B,N,no] output) found; left as is", PATCH)
        return graph
    shapes = _shapes(model)
    hs = [shapes.get(h) for h in tail.heads]
    if any(s is None or len(s) != 4 or None in s[1:] for s in hs):
        log.info("%s: head maps %s are not static [B,C,H,W]; left as is", PATCH, tail.heads)
        return graph
    no = tail.no
    if no < 6 or any(s[1] % no for s in hs) or len({s[1] // no for s in hs}) != 1:
        log.info("%s: head maps %s are not [B, na*%d, H, W]; left as is", PATCH, hs, no)
        return graph
    na = hs[0][1] // no
    try:
        old = _session(tail_model(model, tail, shapes))
        heads = _head_rows(old, tail.heads, shapes, na, no)
        if heads is None:
            log.info("%s: rows are neither %s per head; left as is", PATCH,
                     " nor ".join(ROW_ORDERS))  # fmt: skip
            return graph
        consts = _constants(old, heads, shapes, no)
        if consts is None:
            log.info("%s: scores are not the sigmoid of their logits; left as is", PATCH)
            return graph
        lean = rebuild(model, tail, heads, consts, no)
        new_tail = find_tail(lean)
        if new_tail is None:  # cannot happen for a graph rebuild() wrote
            raise TrtflowError(f"{PATCH}: the rebuilt decode has no tail", "report this as a bug")
        new = _session(tail_model(lean, new_tail, shapes))
        box, score = _compare(old, new, shapes, tail.heads)
    except TrtflowError:
        raise
    except Exception as err:  # ONNX Runtime cannot run the tail alone (e.g. a pinned batch)
        log.info("%s: the decode tail does not run on its own (%s); left as is", PATCH,
                 str(err).strip().splitlines()[0][:200])  # fmt: skip
        return graph
    orders = sorted({h.order for h in heads})
    if box > BOX_TOLERANCE * options.image_size or score > 0:
        log.info(
            "%s: rebuilt %s decode differs from the original (boxes %.3g px, scores %.3g); "
            "left as is",
            PATCH,
            "/".join(orders),
            box,
            score,
        )
        return graph
    if options.decode_layout not in (None, *orders):
        log.warning("%s: export_pb recorded %s, the graph's rows are %s", PATCH,
                    options.decode_layout, "/".join(orders))  # fmt: skip
    count = {op: sum(n.op_type == op for n in tail.nodes) for op in ("Transpose", "Slice", "Pow")}
    _change(
        PATCH,
        f"decode of {len(heads)} heads ({'/'.join(orders)}) rebuilt per head: "
        f"{len(tail.nodes)} -> {len(new_tail.nodes)} tail nodes, Transpose {count['Transpose']} "
        f"-> {len(heads)}, Slice {count['Slice']} -> 0, Pow {count['Pow']} -> 0; "
        + ("bit-identical" if box == 0 else f"boxes within {box:.2g} px"),
    )
    graph = gs.import_onnx(lean)
    graph.cleanup().toposort()
    return graph
