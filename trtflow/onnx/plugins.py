"""TensorRT plugins in an ONNX graph: the one place that knows their ops, detaches, strips them."""

from __future__ import annotations

import logging
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


#: TensorRT's plugin op names end in this (EfficientNMS_TRT, BatchedNMS_TRT, ...).
PLUGIN_SUFFIX = "_TRT"


def is_plugin(node: Any) -> bool:
    """A TensorRT plugin node (ONNX Runtime cannot run it): a ``*_TRT`` op or a custom domain."""
    return node.op_type.endswith(PLUGIN_SUFFIX) or node.domain not in ("", "ai.onnx")


def plugin_ops(model: Any) -> list[str]:
    """The plugin op types of an ONNX model, sorted (empty: ONNX Runtime runs all of it)."""
    return sorted({n.op_type for n in model.graph.node if is_plugin(n)})


def has_nms(model: Any) -> bool:
    """Does the model end in the EfficientNMS_TRT plugin (``efficient_nms`` patch)?"""
    return any(n.op_type == NMS_OP for n in model.graph.node)


def detach_plugins(model: Any) -> tuple[Any, list[Any], list[Any]]:
    """Remove TensorRT plugin nodes (e.g. EfficientNMS_TRT); their inputs become the outputs.

    Returns (model without plugins, the removed nodes, the original graph outputs).
    """
    import onnx

    plugins = [n for n in model.graph.node if is_plugin(n)]
    if not plugins:
        return model, [], []
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    outputs = list(stripped.graph.output)
    keep = [n for n in stripped.graph.node if not is_plugin(n)]
    del stripped.graph.node[:]
    stripped.graph.node.extend(keep)
    del stripped.graph.output[:]
    for node in plugins:
        for name in node.input:
            if name and not any(o.name == name for o in stripped.graph.output):
                stripped.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    log.info("detached %s for calibration", ", ".join(f"{n.op_type} {n.name}" for n in plugins))
    return stripped, plugins, outputs


def reattach_plugins(model: Any, plugins: list[Any], outputs: list[Any]) -> Any:
    """Put back what detach_plugins removed (after quantization, in float)."""
    if not plugins:
        return model
    model.graph.node.extend(plugins)
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


#: Names of the two plugin inputs that ``efficient_nms`` adds (outputs of ``strip_nms``).
NMS_BOXES = "trtflow/efficient_nms/boxes"
NMS_SCORES = "trtflow/efficient_nms/scores"
#: Names of the EfficientNMS_TRT outputs, as TensorRT's samples and deployments name them.
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
NMS_OP = "EfficientNMS_TRT"


def strip_nms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return the model without its EfficientNMS_TRT node: outputs are the plugin's inputs.

    ONNX Runtime cannot run the TensorRT plugin; the stripped model (outputs boxes ``[B,N,4]``
    and scores ``[B,N,C]``) can be compared with the unpatched output instead.
    """
    graph = gs.import_onnx(model)
    plugins = [node for node in graph.nodes if node.op == NMS_OP]
    if len(plugins) != 1:
        raise TrtflowError(
            f"model has {len(plugins)} {NMS_OP} nodes, expected 1",
            "use strip_nms only on models patched with efficient_nms",
        )
    plugin = plugins[0]
    graph.outputs = list(plugin.inputs)
    plugin.outputs.clear()
    plugin.inputs.clear()
    graph.cleanup().toposort()
    stripped = gs.export_onnx(graph)
    onnx.checker.check_model(stripped)
    return stripped
