"""onnx-graphsurgeon helpers the patch families share: names, constants, consumers, shapes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtflow.core.errors import TrtflowError
from trtflow.onnx.plugins import has_nms, strip_nms

log = logging.getLogger(__name__)


def _name(patch: str, *parts: str) -> str:
    return "/".join(("trtflow", patch, *parts))


def _label(node: gs.Node) -> str:
    """A node's name, or its first output's name for unnamed nodes."""
    return node.name or (node.outputs[0].name if node.outputs else node.op)


# ---------------------------------------------------------------------------------------------
# Small graph helpers
# ---------------------------------------------------------------------------------------------


def _np_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """The tensor's dtype as a numpy dtype (None when unknown or not representable)."""
    dtype = tensor.dtype
    if dtype is None:
        return None
    if isinstance(dtype, int) and not isinstance(dtype, np.dtype):
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
        except (KeyError, TypeError, ValueError):
            return None
    return np.dtype(dtype)


def _fmt_shape(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _is_static(shape: Sequence[Any] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _const_values(tensor: gs.Tensor) -> np.ndarray | None:
    """Values of a constant tensor: an initializer or the output of a ``Constant`` node."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def _lower_constant_nodes(graph: gs.Graph) -> int:
    """Turn ``Constant`` nodes with a tensor ``value`` into initializers; return how many."""
    lowered = 0
    for node in list(graph.nodes):
        if node.op != "Constant" or len(node.outputs) != 1 or set(node.attrs) != {"value"}:
            continue
        value = node.attrs["value"]
        if not isinstance(value, gs.Constant):
            continue
        out = node.outputs[0]
        if _is_graph_io(graph, out):
            continue
        node.outputs.clear()
        out.to_constant(np.asarray(value.values))
        lowered += 1
    if lowered:
        graph.cleanup()
    return lowered


def _consumers(tensor: gs.Tensor) -> list[gs.Node]:
    """Distinct consumer nodes of ``tensor`` in a stable order."""
    seen: dict[int, gs.Node] = {}
    for node in tensor.outputs:
        seen.setdefault(id(node), node)
    return list(seen.values())


def _replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[i] = new


def _is_graph_io(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.inputs) or any(t is tensor for t in graph.outputs)


def _bypass(graph: gs.Graph, node: gs.Node, src: gs.Tensor) -> bool:
    """Remove ``node`` (a no-op from ``src`` to its first output), rewiring its consumers.

    If the node's output is a graph output, the producer of ``src`` is made to produce the graph
    output instead, so the graph output keeps its name. Returns False when that is impossible
    (``src`` is a graph input/output or a constant) and the node must stay.
    """
    dst = node.outputs[0]
    if any(t is dst for t in graph.outputs):
        if _is_graph_io(graph, src) or len(src.inputs) != 1:
            return False
        producer = src.inputs[0]
        for consumer in _consumers(src):
            if consumer is not node:
                _replace_input(consumer, src, dst)
        node.outputs.clear()
        node.inputs.clear()
        producer.outputs[[id(t) for t in producer.outputs].index(id(src))] = dst
        return True
    for consumer in _consumers(dst):
        _replace_input(consumer, dst, src)
    node.outputs.clear()
    node.inputs.clear()
    return True


def _infer_shapes(graph: gs.Graph, clear_outputs: bool = False) -> gs.Graph:
    """Re-run ONNX shape inference (with data propagation) and return the re-imported graph.

    Shapes of intermediate tensors are dropped first: ONNX keeps an existing ``value_info`` over
    an inferred one, so stale shapes (e.g. a batch of 1 after ``fix_batch``) would survive.
    """
    graph.cleanup().toposort()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and not any(t is tensor for t in graph.inputs):
            is_output = any(t is tensor for t in graph.outputs)
            if is_output and not clear_outputs:
                continue
            tensor.shape = None
            if not is_output:
                tensor.dtype = None
    model = gs.export_onnx(graph, do_type_check=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # best effort, as polygraphy does: patches degrade without shapes
        log.warning("ONNX shape inference failed, continuing without shapes: %s", err)
    return gs.import_onnx(model)


def _single_output(graph: gs.Graph, patch: str) -> gs.Variable:
    if len(graph.outputs) != 1:
        raise TrtflowError(
            f"{patch} needs a graph with one output, this one has {len(graph.outputs)}: "
            + ", ".join(t.name for t in graph.outputs),
            f"put {patch} before efficient_nms in the recipe, or remove it",
        )
    return graph.outputs[0]


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of an ONNX node, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _count(model: onnx.ModelProto, op: str) -> int:
    return sum(n.op_type == op for n in model.graph.node)


# ---------------------------------------------------------------------------------------------
# Model-level API
# ---------------------------------------------------------------------------------------------


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping the source model's metadata."""
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    model.doc_string = like.doc_string
    model.model_version = like.model_version
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    return model


def _check(model: onnx.ModelProto, what: str) -> None:
    """``onnx.checker``; a model with the NMS plugin is checked without it."""
    try:
        if has_nms(model):
            onnx.checker.check_model(strip_nms(model))
        else:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise TrtflowError(
            f"{what} fails onnx.checker: {str(err).strip().splitlines()[0]}",
            "apply the recipe one patch at a time to find the step that breaks it",
        ) from err
