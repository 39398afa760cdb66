"""TensorRT's INT8 integer arithmetic on the CPU, exactly: int8 products summed below 2^24."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.onnx.io import load_onnx
from trtflow.onnx.plugins import detach_plugins

log = logging.getLogger(__name__)


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

    from trtflow.onnx.patches.graph import node_attr

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
