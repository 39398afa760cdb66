"""Frozen TensorFlow GraphDefs: read, discover I/O tensors, run (TF2 API, no TF1 sessions)."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtflow.core.batches import in_chunks
from trtflow.core.errors import TrtflowError
from trtflow.images.io import image_layout, to_layout

log = logging.getLogger(__name__)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Ops that never count as a model output when we look for graph sinks.
_NOT_OUTPUTS = {"NoOp", "Const", "Assert", "SaveV2", "RestoreV2", "VarHandleOp", "Placeholder"}


@dataclass
class GraphIO:
    """The contract of a frozen graph: tensor names, shapes (-1 = dynamic) and layout."""

    input_name: str
    output_name: str
    input_shape: list[int] | None
    output_shape: list[int] | None
    layout: str  # "nhwc" | "nchw" | "unknown"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_graph_def(path: str | Path) -> Any:
    """Parse a frozen GraphDef; a file that is not one raises TrtflowError."""
    import tensorflow as tf

    path = Path(path)
    if path.is_dir():
        raise TrtflowError(
            f"{path} is a directory, not a frozen .pb file",
            "point models.<name>.path at the .pb file, or use source: saved_model for a "
            "SavedModel directory",
        )
    if not path.is_file():
        raise TrtflowError(f"{path}: model file not found", "check models.<name>.path in config")
    data = path.read_bytes()
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise TrtflowError(
            f"{path}: not a TensorFlow frozen GraphDef (protobuf parse failed: {exc})",
            "export the model again as a frozen .pb (or point source: at a SavedModel directory)",
        ) from None
    if not gd.node or not any(n.op == "Placeholder" for n in gd.node):
        raise TrtflowError(
            f"{path}: not a TensorFlow frozen GraphDef (no nodes/no Placeholder input found)",
            "export the model again as a frozen .pb (or point source: at a SavedModel directory)",
        )
    return gd


def _shape_of(node: Any) -> list[int] | None:
    if "shape" in node.attr and not node.attr["shape"].shape.unknown_rank:
        return [d.size for d in node.attr["shape"].shape.dim]
    return None


def list_inputs(gd: Any) -> list[str]:
    return [f"{n.name}:0" for n in gd.node if n.op == "Placeholder"]


def list_outputs(gd: Any) -> list[str]:
    consumed = set()
    for n in gd.node:
        for inp in n.input:
            consumed.add(inp.lstrip("^").split(":")[0])
    return [f"{n.name}:0" for n in gd.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]


def _all_tensor_names(gd: Any) -> set[str]:
    return {f"{n.name}:0" for n in gd.node}


def _normalise(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def resolve_io(
    gd: Any, input_name: str | None, output_name: str | None, source: str = "model.pb"
) -> tuple[str, str]:
    """Pick the input/output tensor names: the configured ones, or the only candidate."""
    names = _all_tensor_names(gd)
    chosen = []
    for kind, given, candidates in (
        ("input", input_name, list_inputs(gd)),
        ("output", output_name, list_outputs(gd)),
    ):
        if given:
            given = _normalise(given)
            if given not in names:
                raise TrtflowError(
                    f"{source}: {kind} tensor {given!r} does not exist; "
                    f"the graph's {kind} candidates are: {', '.join(candidates) or 'none'}",
                    f"set models.<name>.{kind}_name to one of them",
                )
            chosen.append(given)
        elif len(candidates) == 1:
            chosen.append(candidates[0])
        else:
            raise TrtflowError(
                f"{source}: the graph has {len(candidates)} {kind}s "
                f"({', '.join(candidates) or 'none'}) and models.<name>.{kind}_name is not set",
                f"set models.<name>.{kind}_name to the {kind} tensor to use",
            )
    return chosen[0], chosen[1]


def describe_io(gd: Any, input_name: str, output_name: str) -> GraphIO:
    """Shapes and layout of the chosen tensors (output shape inferred by importing the graph)."""
    import tensorflow as tf

    by_name = {n.name: n for n in gd.node}
    in_shape = _shape_of(by_name[input_name.split(":")[0]])
    out_shape = None
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        tensor = graph.get_tensor_by_name(output_name)
        if tensor.shape.rank is not None:
            out_shape = [-1 if d is None else int(d) for d in tensor.shape.as_list()]
    layout = (image_layout(in_shape) or "unknown").lower() if in_shape else "unknown"
    return GraphIO(input_name, output_name, in_shape, out_shape, layout)


class FrozenGraphRunner:
    """Run a frozen GraphDef via TF2 wrap_function + prune (Polygraphy's TF backend is TF1-only).

    Takes NHWC images, as every stage makes them, and transposes them for an NCHW graph.
    """

    def __init__(self, pb: str | Path | Any, input_name: str, output_name: str) -> None:
        import tensorflow as tf

        gd = read_graph_def(pb) if isinstance(pb, (str, Path)) else pb

        def _import() -> None:
            tf.compat.v1.import_graph_def(gd, name="")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        graph = wrapped.graph
        placeholder = graph.get_tensor_by_name(input_name)
        self._fn = wrapped.prune(placeholder, graph.get_tensor_by_name(output_name))
        dims = placeholder.shape.as_list() if placeholder.shape.rank else []
        self.batch: int | None = dims[0] if dims and dims[0] else None  # None: dynamic
        self.dims = dims

    def __call__(self, x: Any) -> Any:
        import tensorflow as tf

        x = to_layout(x, "NHWC", self.dims)
        return in_chunks(lambda part: self._fn(tf.constant(part)).numpy(), x, self.batch)
