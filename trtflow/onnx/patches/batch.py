"""Batch patches: a static or dynamic batch dimension through every reshape."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtflow.onnx.patches.graph import (
    _const_values,
    _fmt_shape,
    _infer_shapes,
    _is_static,
    _label,
    _lower_constant_nodes,
    _name,
)
from trtflow.onnx.patches.registry import PatchOptions, _change, register

log = logging.getLogger(__name__)


#: Symbolic name of the batch dimension of a dynamic-batch model.
BATCH_DIM = "batch"


def _original_batches(graph: gs.Graph) -> set[int]:
    """Leading dims a Reshape may have hard-coded: the inputs' fixed batch, else 1."""
    fixed = {t.shape[0] for t in graph.inputs if t.shape and isinstance(t.shape[0], int)}
    return fixed or {1}


def _batch_free_reshape(
    shape: np.ndarray, data_shape: Sequence[Any], allowzero: bool
) -> list[int] | None:
    """New Reshape target for ``shape`` (leading dim hard-coding the batch), or None."""
    rest = [int(v) for v in shape[1:]]
    if -1 not in rest:
        return [-1, *rest]
    known_rest = data_shape[1:]
    if _is_static(known_rest) and not allowzero:
        resolved = [
            (known_rest[j] if j < len(known_rest) else None) if v == 0 else v
            for j, v in enumerate(rest)
        ]
        if all(isinstance(v, int) for v in resolved):
            others = math.prod(v for v in resolved if v != -1)
            volume = math.prod(known_rest)
            if others > 0 and volume % others == 0:
                return [-1, *[volume // others if v == -1 else v for v in resolved]]
    if allowzero:
        return None
    return [0, *rest]


def _traced_reshape(node: gs.Node) -> list[int] | None:
    """``[-1, d1, ...]`` for a Reshape with a runtime shape that traces to ``[batch, d1, ...]``.

    tf2onnx computes ``Reshape(x, Concat(Slice(Shape(x)), [N], [C]))`` for a Keras
    ``Reshape((-1, C))``; ONNX data propagation resolves it to ``[batch, N, C]``. With d1...
    static, ``-1`` resolves to ``volume(x) / (d1*...)``, which is the batch whenever the original
    Reshape is valid, and the shape subgraph (INT64 casts included) goes away.
    """
    shape = node.outputs[0].shape
    if not shape or shape[0] != BATCH_DIM:
        return None
    if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    return [-1, *shape[1:]]


#: Two concrete batches for tracing where ONNX shape inference loses a symbolic batch.
_TRACE_BATCHES = (7, 11)


def _batch_carriers(graph: gs.Graph) -> set[str]:
    """Tensors whose leading dim follows the input batch, traced with two concrete batches.

    ONNX shape inference turns a symbolic batch into a fresh unknown at some ops (a Resize with
    constant scales, for one), so behind them the symbolic trace cannot see the batch. A tensor
    whose leading dim is 7 when the inputs' batch is 7 and 11 when it is 11 carries the batch.
    """
    base = gs.export_onnx(graph, do_type_check=False)
    del base.graph.value_info[:]
    leads: list[dict[str, int]] = []
    for batch in _TRACE_BATCHES:
        m = onnx.ModelProto()
        m.CopyFrom(base)
        for vi in m.graph.input:
            dims = vi.type.tensor_type.shape.dim
            if dims:
                dims[0].Clear()
                dims[0].dim_value = batch
        try:
            m = onnx.shape_inference.infer_shapes(m, data_prop=True)
        except Exception as err:  # best effort: no carriers found
            log.debug("fix_batch: tracing batch %d failed: %s", batch, err)
            return set()
        leads.append({
            vi.name: vi.type.tensor_type.shape.dim[0].dim_value
            for vi in m.graph.value_info
            if vi.type.tensor_type.shape.dim and vi.type.tensor_type.shape.dim[0].dim_value
        })  # fmt: skip
    return {name for name, lead in leads[0].items() if (lead, leads[1].get(name)) == _TRACE_BATCHES}


def _free_reshape(
    node: gs.Node, hard_coded: set[int], warned: set[str], carriers: Callable[[], set[str]]
) -> tuple[list[int], str] | None:
    """``(new shape, old shape description)`` if the Reshape ``node`` pins the batch, else None.

    ``carriers()`` names the tensors that carry the batch where the symbolic trace lost it.
    """
    data = node.inputs[0]
    values = _const_values(node.inputs[1])
    if values is None:
        traced = _traced_reshape(node)
        return None if traced is None else (traced, "computed at runtime (batch-only dynamic)")
    if values.ndim != 1 or values.size == 0:
        return None
    lead = int(values[0])
    if lead not in hard_coded or lead <= 0:
        return None
    traced = bool(data.shape) and (data.shape[0] == BATCH_DIM or data.name in carriers())
    if not traced:
        if _label(node) not in warned:
            warned.add(_label(node))
            log.warning(
                "fix_batch: Reshape %r hard-codes a leading %d but its input's batch could not "
                "be traced (input shape %s): left as is",
                _label(node),
                lead,
                _fmt_shape(data.shape),
            )
        return None
    allowzero = bool(node.attrs.get("allowzero", 0))
    new_values = _batch_free_reshape(values, data.shape, allowzero)
    return None if new_values is None else (new_values, str(values.tolist()))


@register("fix_batch")
def fix_batch(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Set the batch dim of inputs/outputs (an int or symbolic 'batch'); free hard-coded Reshapes.

    A Reshape whose constant shape starts with the exported batch (e.g. ``[1,-1,85]``) while its
    data's leading dim is the graph batch gets ``[-1, N, 85]`` (N computed from static dims) or
    ``[0, -1, 85]`` (copy the batch), so a dynamic or different fixed batch runs. A Reshape whose
    shape is computed at runtime but traces to ``[batch, static...]`` gets the constant
    ``[-1, static...]``. Shapes are traced with ONNX shape inference using a symbolic batch.
    """
    patch = "fix_batch"
    hard_coded = _original_batches(graph)
    for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
        for tensor in tensors:
            if not tensor.shape:
                log.warning("%s: %s %r has no shape: batch not set", patch, kind, tensor.name)
                continue
            tensor.shape = [BATCH_DIM, *tensor.shape[1:]]
    declared = {t.name: t.shape for t in graph.outputs}
    _lower_constant_nodes(graph)

    fixed: set[str] = set()
    warned: set[str] = set()
    for _ in range(len(graph.nodes) + 1):  # each pass frees one more layer of Reshapes
        graph = _infer_shapes(graph, clear_outputs=True)
        fixed_now = 0
        traced: list[set[str]] = []

        def carriers(graph: gs.Graph = graph, traced: list[set[str]] = traced) -> set[str]:
            if not traced:  # once per pass, and only if a Reshape needs it
                traced.append(_batch_carriers(graph))
            return traced[0]

        for node in graph.nodes:
            label = _label(node)
            if node.op != "Reshape" or label in fixed or len(node.inputs) < 2:
                continue
            found = _free_reshape(node, hard_coded, warned, carriers)
            if found is None:
                continue
            new_values, was = found
            node.inputs[1] = gs.Constant(
                _name(patch, label, "shape"), np.array(new_values, dtype=np.int64)
            )
            fixed.add(label)
            fixed_now += 1
            _change(patch, f"Reshape {label!r}: shape {was} -> {new_values}")
        if not fixed_now:
            break

    target: int | str = BATCH_DIM if options.batch == "dynamic" else int(options.batch)
    for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
        for tensor in tensors:
            if kind == "output" and not tensor.shape:
                tensor.shape = declared.get(tensor.name)  # inference could not reach it
            if not tensor.shape:
                continue
            lead = tensor.shape[0]
            if kind == "output" and isinstance(lead, int):
                _change(
                    patch,
                    f"WARNING: output {tensor.name!r} still has a fixed leading dim {lead} after "
                    "tracing a symbolic batch: an op other than Reshape (Expand, Tile, "
                    "ConstantOfShape, ...) may hard-code the batch",
                    logging.WARNING,
                )
            tensor.shape = [target, *tensor.shape[1:]]
            _change(patch, f"{kind} {tensor.name!r}: batch dim -> {_fmt_shape(tensor.shape)}")
    if target != BATCH_DIM:
        graph = _infer_shapes(graph)
    return graph
