"""Resize patches: nearest-neighbour modes the TensorRT parser accepts."""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from trtflow.onnx.patches.graph import _const_values, _is_static, _label
from trtflow.onnx.patches.registry import PatchOptions, _change, register

log = logging.getLogger(__name__)


# Resize coordinate modes whose nearest sample equals asymmetric + floor for an integer scale s:
# tf_half_pixel_for_nn maps output x to (x + 0.5) / s; with x = k*s + r (0 <= r < s) that is
# k + (r + 0.5) / s, and (r + 0.5) / s < 1, so floor() gives k, as floor(x / s) does.
_FLOOR_EQUIVALENT_MODES = frozenset({"tf_half_pixel_for_nn"})


def _resize_scales(node: gs.Node) -> np.ndarray | None:
    """A Resize's scale factors (from ``scales``, else from constant ``sizes``), or None."""
    scales = _const_values(node.inputs[2]) if len(node.inputs) > 2 else None
    if scales is not None and scales.size:
        return scales.astype(np.float64)
    sizes = _const_values(node.inputs[3]) if len(node.inputs) > 3 else None
    shape = node.inputs[0].shape
    if sizes is None or not sizes.size or shape is None or len(shape) != sizes.size:
        return None
    if not _is_static(shape) or 0 in shape:
        return None  # e.g. a dynamic batch: the scale of that dim is unknown
    return np.asarray(sizes, dtype=np.float64) / np.asarray(shape, dtype=np.float64)


@register("nearest_resize")
def nearest_resize(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Rewrite tf2onnx's nearest Resize (tf_half_pixel_for_nn, floor) as asymmetric + floor.

    TensorRT's ONNX parser (10.x, TensorRT-RTX) rejects ``tf_half_pixel_for_nn`` unless
    ``nearest_mode`` is ``round_prefer_floor``; tf2onnx writes ``floor`` for every Keras/TF
    nearest upsample. For integer scale factors both pick the same input pixel (output x reads
    input floor((x + 0.5) / s) = floor(x / s)), so the output is bit-identical. Non-integer
    scales, other nearest modes and other coordinate modes are left as they are (logged).
    """
    patch = "nearest_resize"
    for node in graph.nodes:
        if node.op != "Resize" or node.attrs.get("mode", "nearest") != "nearest":
            continue
        label = _label(node)
        mode = node.attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest = node.attrs.get("nearest_mode", "round_prefer_floor")
        if mode not in _FLOOR_EQUIVALENT_MODES:
            log.info("%s: Resize %r (%s, %s): left as is", patch, label, mode, nearest)
            continue
        scales = _resize_scales(node)
        integer = scales is not None and bool(np.all((scales >= 1) & (scales == np.round(scales))))
        if nearest != "floor" or not integer:
            why = (
                f"nearest_mode {nearest!r} is not floor"
                if nearest != "floor"
                else f"scales {None if scales is None else scales.tolist()} are not integers >= 1"
            )
            log.warning(
                "%s: Resize %r (%s): %s, so asymmetric/floor would change the result: left as "
                "is (TensorRT's parser may reject it)",
                patch,
                label,
                mode,
                why,
            )
            continue
        node.attrs["coordinate_transformation_mode"] = "asymmetric"
        node.attrs["nearest_mode"] = "floor"
        if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            node.inputs[1] = gs.Variable.empty()  # roi: only tf_crop_and_resize reads it
        _change(
            patch,
            f"Resize {label!r}: {mode}/floor -> asymmetric/floor "
            f"(integer scales {[int(s) for s in scales]})",
        )
    return graph
