"""Cleanup patches: I/O names, no-op nodes, and the sanitize loop (cleanup, shapes, folding)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtflow.core.errors import TrtflowError
from trtflow.onnx.patches.graph import (
    _bypass,
    _const_values,
    _fmt_shape,
    _infer_shapes,
    _is_graph_io,
    _is_static,
    _label,
    _name,
    _np_dtype,
    _single_output,
)
from trtflow.onnx.patches.registry import PatchOptions, _change, register

log = logging.getLogger(__name__)


_SANITIZE_MAX_ITERATIONS = 10


def _take_name(graph: gs.Graph, tensor: gs.Tensor, name: str, patch: str) -> None:
    """Rename ``tensor`` to ``name``, moving any other tensor of that name out of the way."""
    if tensor.name == name:
        return
    clash = graph.tensors().get(name)
    if clash is not None and clash is not tensor:
        if _is_graph_io(graph, clash):
            raise TrtflowError(
                f"{patch}: graph input/output {name!r} already exists",
                "choose other names for input_name/output_name",
            )
        clash.name = _name(patch, "renamed", name)
        _change(patch, f"moved internal tensor {name!r} to {clash.name!r}")
    old = tensor.name
    tensor.name = name
    _change(patch, f"renamed {old!r} -> {name!r}")


@register("rename_io")
def rename_io(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Rename the single input to input_name and the single output to output_name."""
    patch = "rename_io"
    if len(graph.inputs) != 1:
        raise TrtflowError(
            f"{patch} needs one graph input, this one has {len(graph.inputs)}",
            "remove rename_io from the recipe",
        )
    out = _single_output(graph, patch)
    _take_name(graph, graph.inputs[0], options.input_name, patch)
    _take_name(graph, out, options.output_name, patch)
    return graph


def _broadcast_is_identity(x_shape: Sequence[Any] | None, c_shape: Sequence[int]) -> bool:
    """True when broadcasting a constant of ``c_shape`` against ``x`` leaves ``x``'s shape."""
    if len(c_shape) == 0:
        return True
    if x_shape is None or len(c_shape) > len(x_shape):
        return False
    for cd, xd in zip(reversed(c_shape), reversed(x_shape), strict=False):
        if cd != 1 and not (isinstance(xd, int) and xd == cd):
            return False
    return True


def _noop_source(graph: gs.Graph, node: gs.Node) -> tuple[gs.Tensor, str] | None:
    """If ``node`` is a no-op, return (the input it passes through, why)."""
    op = node.op
    if not node.outputs or not node.inputs:
        return None
    out = node.outputs[0]
    x = node.inputs[0]
    if op == "Identity":
        return x, "Identity"
    if op == "Dropout":
        if any(t.outputs or _is_graph_io(graph, t) for t in node.outputs[1:]):
            return None  # the mask is used
        if len(node.inputs) >= 3 and not node.inputs[2].is_empty():
            training = _const_values(node.inputs[2])
            if training is None or bool(training.any()):
                return None
        return x, "Dropout (inference)"
    if op == "Transpose":
        perm = node.attrs.get("perm")
        if perm is not None and list(perm) == list(range(len(perm))):
            return x, f"Transpose with identity perm {list(perm)}"
        return None
    if op == "Reshape":
        if _is_static(x.shape) and _is_static(out.shape) and list(x.shape) == list(out.shape):
            return x, f"Reshape to the same static shape {_fmt_shape(x.shape)}"
        return None
    if op == "Cast":
        src = _np_dtype(x)
        try:
            to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
        except (KeyError, TypeError, ValueError):
            return None
        if src is not None and src == to:
            return x, f"Cast to the same dtype {to}"
        return None
    if op in ("Mul", "Add", "Sub", "Div") and len(node.inputs) == 2:
        neutral = 1 if op in ("Mul", "Div") else 0
        slots = (0, 1) if op in ("Mul", "Add") else (1,)
        for c_slot in slots:
            c_values = _const_values(node.inputs[c_slot])
            data = node.inputs[1 - c_slot]
            if c_values is None or _const_values(data) is not None:
                continue
            if c_values.size and np.all(c_values == neutral):
                if _broadcast_is_identity(data.shape, c_values.shape):
                    return data, f"{op} by constant {neutral}"
        return None
    return None


@register("drop_noops")
def drop_noops(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Remove Identity, Dropout, identity Transpose/Reshape/Cast and Mul-by-1 / Add-of-0 nodes.

    Consumers are rewired to the node's input; when the node's output is a graph output, the
    input's producer is made to produce it so output names stay. Sub of 0 and Div by 1 too.
    """
    patch = "drop_noops"
    graph = _infer_shapes(graph)
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            found = _noop_source(graph, node)
            if found is None:
                continue
            src, why = found
            name = _label(node)
            if _bypass(graph, node, src):
                _change(patch, f"removed {name!r}: {why}")
                changed = True
            else:
                log.info("%s: kept %r (%s): it links graph input/output directly", patch, name, why)
        graph.cleanup()
    graph.toposort()
    return graph


@register("sanitize")
def sanitize(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Loop cleanup + toposort, shape inference and constant folding until the node count is stable.

    Shapes are inferred before each fold: ``fold_constants`` can only fold Shape ops (and the
    Gather/Slice/Concat chains behind them) when the shapes are known.
    """
    patch = "sanitize"
    before = len(graph.nodes)
    for iteration in range(1, _SANITIZE_MAX_ITERATIONS + 1):
        start = len(graph.nodes)
        graph.cleanup().toposort()
        graph = _infer_shapes(graph)
        graph.fold_constants(partitioning="basic").cleanup().toposort()
        end = len(graph.nodes)
        log.debug("%s: iteration %d: %d -> %d nodes", patch, iteration, start, end)
        if end == start:
            break
    else:
        log.warning("%s: node count still changing after %d iterations", patch, iteration)
    graph = _infer_shapes(graph)
    if len(graph.nodes) != before:
        _change(
            patch,
            f"folded {before} -> {len(graph.nodes)} nodes in {iteration} iteration(s)",
        )
    else:
        log.info("%s: nothing to fold (%d nodes)", patch, before)
    return graph
