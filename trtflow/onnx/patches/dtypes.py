"""Dtype patches: INT64 tensors as INT32 where TensorRT needs them and the values fit."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtflow.onnx.patches.graph import _label, _lower_constant_nodes, _name, _np_dtype
from trtflow.onnx.patches.registry import PatchOptions, _change, register

log = logging.getLogger(__name__)


_INT32 = np.iinfo(np.int32)


# Ops whose int32 index inputs are legal per the ONNX spec *and* implemented by ONNX Runtime's CPU
# kernels and TensorRT's ONNX parser. The spec alone would also allow e.g. OneHot's depth, but
# ORT only registers some OneHot type combinations, so such slots stay INT64 (logged).
_INT32_OPS = frozenset({"Gather", "GatherElements", "ScatterElements", "Slice", "CumSum"})
# Inputs where an out-of-range value means "to the end": clamping to int32 keeps the meaning.
_CLAMPABLE = {"Slice": (1, 2)}


def _int32_groups(node: gs.Node, opset: int) -> tuple[dict[str, list[int]], dict[int, str]]:
    """Per the ONNX schema of ``node``: input slots that may become int32, grouped by type var.

    Returns ``(groups, reasons)``: ``groups[type_var]`` lists the node input slots bound to a
    type variable that allows tensor(int32) and types no output (so converting cannot change an
    output dtype); all slots of a group must be converted together. ``reasons[slot]`` says why
    any other slot must stay int64.
    """
    try:
        schema = onnx.defs.get_schema(node.op, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return {}, {i: f"{node.op} has no ONNX schema" for i in range(len(node.inputs))}
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    output_vars = {o.type_str for o in schema.outputs}
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    groups: dict[str, list[int]] = {}
    reasons: dict[int, str] = {}
    formals = list(schema.inputs)
    for slot in range(min(len(node.inputs), len(formals)) if formals else 0):
        formal = formals[slot]
        type_var = formal.type_str
        allowed = constraints.get(type_var, {type_var})
        what = f"{node.op} input {formal.name!r}"
        if "tensor(int32)" not in allowed:
            reasons[slot] = f"{what} only takes {'|'.join(sorted(allowed))} in the ONNX spec"
        elif type_var in output_vars or formal.option == variadic:
            reasons[slot] = f"{what} shares type {type_var} with the output"
        elif node.op not in _INT32_OPS:
            reasons[slot] = (
                f"{what} may be int32 per the spec, but ORT/TensorRT support is unverified"
            )
        else:
            groups.setdefault(type_var, []).append(slot)
    for slot in range(len(formals), len(node.inputs)):
        reasons[slot] = f"{node.op} input {slot} is variadic"
    return groups, reasons


def _is_int64_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and _np_dtype(tensor) == np.dtype(np.int64)


def fits_int32(values: np.ndarray) -> bool:
    """Do all ``values`` fit INT32 (TensorRT's index type)?"""
    return values.size == 0 or (values.min() >= _INT32.min and values.max() <= _INT32.max)


@register("int64_to_int32")
def int64_to_int32(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Turn INT64 constants into INT32 where the consuming op's ONNX schema allows int32.

    Converted: Gather/GatherElements/ScatterElements indices, CumSum axis, Slice
    starts/ends/axes/steps (one type, so all or none; INT64_MAX-style Slice bounds are clamped
    to the int32 range, which Slice clamps anyway). Kept INT64, per the spec: Reshape/Expand
    shapes, Tile repeats, ConstantOfShape, Squeeze/Unsqueeze/Reduce axes, Split sizes, Pad pads,
    TopK's K, GatherND/ScatterND indices; and inputs whose type also types the output (Add,
    Concat, Range...). TensorRT reads the remaining INT64 shape tensors itself. Each converted
    and each kept constant is logged with the reason.
    """
    patch = "int64_to_int32"
    _lower_constant_nodes(graph)
    copies: dict[str, gs.Constant] = {}
    kept: dict[str, set[str]] = {}
    converted: dict[str, list[str]] = {}

    def int32_copy(tensor: gs.Constant, clamp: bool) -> gs.Constant:
        values = np.asarray(tensor.values)
        key = tensor.name
        if clamp and not fits_int32(values):
            values = np.clip(values, _INT32.min, _INT32.max)
            key += "/clamped"
        if key not in copies:
            copies[key] = gs.Constant(_name(patch, key), values.astype(np.int32))
        return copies[key]

    for node in list(graph.nodes):
        int64_slots = {s for s, t in enumerate(node.inputs) if _is_int64_constant(t)}
        if not int64_slots:
            continue
        groups, reasons = _int32_groups(node, graph.opset)
        clampable = _CLAMPABLE.get(node.op, ())
        for type_var, slots in groups.items():
            members = [s for s in slots if not node.inputs[s].is_empty()]
            if not int64_slots.intersection(members):
                continue
            blocker = next((s for s in members if s not in int64_slots), None)
            if blocker is not None:
                for s in int64_slots.intersection(members):
                    reasons[s] = (
                        f"{node.op} input {s} shares type {type_var} with input {blocker}, "
                        "which is not an INT64 constant"
                    )
                continue
            if not all(s in clampable or fits_int32(node.inputs[s].values) for s in members):
                for s in members:
                    reasons[s] = f"{node.op} input {s}: values do not fit in int32"
                continue
            for s in members:
                old = node.inputs[s]
                node.inputs[s] = int32_copy(old, s in clampable)
                converted.setdefault(old.name, []).append(f"{node.op} {_label(node)!r} input {s}")
        for s in sorted(int64_slots):
            if s in reasons:
                kept.setdefault(node.inputs[s].name, set()).add(reasons[s])
    for name, uses in converted.items():
        clamped = " (clamped to int32 range)" if name + "/clamped" in copies else ""
        _change(patch, f"INT64 -> INT32 {name!r}{clamped} for {', '.join(uses)}")
    for name, why in kept.items():
        _change(patch, f"kept INT64 {name!r}: {'; '.join(sorted(why))}")
    graph.cleanup().toposort()
    return graph
