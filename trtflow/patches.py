"""Named ONNX graph ops (onnx-graphsurgeon) that turn a tf2onnx YOLOv5 into a TensorRT-ready ONNX.

Each patch is a small function ``patch(graph, options) -> graph`` registered under the name the
config's ``patches:`` recipe uses. ``apply_patches`` runs a recipe top to bottom, returns the
patched, ``onnx.checker``-valid model and a report of what each step changed.

Every patch names the nodes and tensors it creates ``trtflow/<patch>/...`` and logs one line per
change. Heavy modules (onnx, onnx-graphsurgeon) are imported here at module level: only stage code
imports this module, never ``rules/common.smk``.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtflow.errors import TrtflowError

log = logging.getLogger(__name__)

Patch = Callable[[gs.Graph, "PatchOptions"], gs.Graph]

#: Symbolic name of the batch dimension of a dynamic-batch model.
BATCH_DIM = "batch"
#: Names of the two plugin inputs that ``efficient_nms`` adds (outputs of ``strip_nms``).
NMS_BOXES = "trtflow/efficient_nms/boxes"
NMS_SCORES = "trtflow/efficient_nms/scores"
#: Names of the EfficientNMS_TRT outputs, as TensorRT's samples and deployments name them.
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
NMS_OP = "EfficientNMS_TRT"

_INT32 = np.iinfo(np.int32)
_SANITIZE_MAX_ITERATIONS = 10


@dataclass(frozen=True)
class PatchOptions:
    """What the patches need to know about the model; built from the model's config entry."""

    image_size: int
    batch: int | str = "dynamic"
    input_name: str = "images"
    output_name: str = "output0"
    num_classes: int | None = None
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    #: Row order of the decoded predictions export_pb recorded (``trtflow.discover``), if known.
    decode_layout: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise TrtflowError(f"image_size {self.image_size!r} is not an int", "use e.g. 320")
        if self.image_size < 1:
            raise TrtflowError(f"image_size {self.image_size} is < 1", "use e.g. 320")
        if self.batch != "dynamic" and (
            isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1
        ):
            raise TrtflowError(f"batch {self.batch!r} is invalid", "use 'dynamic' or an int >= 1")
        if self.num_classes is not None and self.num_classes < 1:
            raise TrtflowError(f"num_classes {self.num_classes} is < 1", "use None to infer it")
        for key in ("score_threshold", "iou_threshold"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise TrtflowError(f"{key} {getattr(self, key)} is outside [0, 1]")
        if self.max_detections < 1:
            raise TrtflowError(f"max_detections {self.max_detections} is < 1", "use e.g. 100")


PATCHES: dict[str, Patch] = {}

# The change list of the patch that is running (set by apply_patches), so that patches keep the
# plain (graph, options) -> graph signature and still report what they did.
_CHANGES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "trtflow_patch_changes", default=None
)


def register(name: str) -> Callable[[Patch], Patch]:
    """Register a patch under ``name``; the function's docstring is its description."""

    def decorator(fn: Patch) -> Patch:
        if name in PATCHES:
            raise ValueError(f"patch {name!r} registered twice")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"patch {name!r} has no docstring")
        PATCHES[name] = fn
        return fn

    return decorator


def describe_patches() -> dict[str, str]:
    """Return ``{patch name: first line of its docstring}`` in registration order."""
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in PATCHES.items()}


def _change(patch: str, message: str, level: int = logging.INFO) -> None:
    """Log one change made by ``patch`` and add it to the running step's report."""
    log.log(level, "%s: %s", patch, message)
    changes = _CHANGES.get()
    if changes is not None:
        changes.append(message)


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


def _detection_layout(out: gs.Tensor, patch: str, options: PatchOptions) -> tuple[int, int]:
    """Return ``(channels, num_classes)`` of a ``[B, N, 5+C]`` detection output."""
    shape = out.shape
    if shape is None or len(shape) != 3:
        raise TrtflowError(
            f"{patch}: output {out.name!r} has shape {_fmt_shape(shape)}, expected [B,N,5+C]",
            "run sanitize first so the output shape is known, or check the model's output",
        )
    last = shape[-1]
    if options.num_classes is not None:
        if isinstance(last, int) and last != options.num_classes + 5:
            raise TrtflowError(
                f"{patch}: output {out.name!r} has {last} channels but num_classes is "
                f"{options.num_classes} (expected {options.num_classes + 5})",
                f"set num_classes to {last - 5} or leave it unset",
            )
        return options.num_classes + 5, options.num_classes
    if not isinstance(last, int) or last < 6:
        raise TrtflowError(
            f"{patch}: cannot infer the number of classes from output shape {_fmt_shape(shape)}",
            "set num_classes in the model's config",
        )
    return last, last - 5


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------

_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]


@register("nchw_input")
def nchw_input(graph: gs.Graph, options: PatchOptions) -> gs.Graph:
    """Make NHWC image inputs NCHW and delete the Transpose(0,3,1,2) tf2onnx put behind them.

    Every Transpose consuming the input is rewritten against the new NCHW input (its perm
    composed with NCHW->NHWC); those that become identities are removed, which covers tf2onnx
    pushing the transpose into several consumers. Other consumers of the NHWC tensor (e.g. a
    Shape) get one shared Transpose back to NHWC. Inputs without a leading Transpose(0,3,1,2)
    are left as they are.
    """
    patch = "nchw_input"
    for index, old in enumerate(list(graph.inputs)):
        consumers = _consumers(old)
        leading = [
            n
            for n in consumers
            if n.op == "Transpose" and list(n.attrs.get("perm", [])) == _TO_NCHW
        ]
        if old.shape is None or len(old.shape) != 4 or not leading:
            log.info(
                "%s: input %r %s has no leading Transpose(0,3,1,2): left as is (already NCHW?)",
                patch,
                old.name,
                _fmt_shape(old.shape),
            )
            continue
        name = old.name
        n, h, w, c = old.shape
        old.name = _name(patch, name, "nhwc")
        new = gs.Variable(name, dtype=old.dtype, shape=[n, c, h, w])
        graph.inputs[index] = new
        # old is now an internal NHWC tensor computed from the NCHW input.
        to_nhwc = gs.Node(
            "Transpose",
            name=_name(patch, name, "to_nhwc"),
            attrs={"perm": list(_TO_NHWC)},
            inputs=[new],
            outputs=[old],
        )
        graph.nodes.append(to_nhwc)
        removed, rewritten = 0, 0
        for node in consumers:
            if node.op != "Transpose":
                continue
            perm = list(node.attrs.get("perm", reversed(range(4))))
            composed = [_TO_NHWC[p] for p in perm]
            _replace_input(node, old, new)
            node.attrs["perm"] = composed
            if composed == [0, 1, 2, 3] and _bypass(graph, node, new):
                removed += 1
            else:
                rewritten += 1
        _change(
            patch,
            f"input {name!r} {_fmt_shape([n, h, w, c])} NHWC -> {_fmt_shape(new.shape)} NCHW; "
            f"removed {removed} Transpose(0,3,1,2)"
            + (f", re-permuted {rewritten} other Transpose" if rewritten else ""),
        )
        others = [node.op for node in _consumers(old)]
        if others:
            _change(
                patch,
                f"kept a Transpose to NHWC for {len(others)} NHWC consumer(s) of {name!r}: "
                + ", ".join(others),
            )
    graph.cleanup().toposort()
    return graph


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


def _fits_int32(values: np.ndarray) -> bool:
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
        if clamp and not _fits_int32(values):
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
            if not all(s in clampable or _fits_int32(node.inputs[s].values) for s in members):
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


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of an ONNX node, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


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


def _count(model: onnx.ModelProto, op: str) -> int:
    return sum(n.op_type == op for n in model.graph.node)


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
        if any(node.op_type == NMS_OP for node in model.graph.node):
            onnx.checker.check_model(strip_nms(model))
        else:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise TrtflowError(
            f"{what} fails onnx.checker: {str(err).strip().splitlines()[0]}",
            "apply the recipe one patch at a time to find the step that breaks it",
        ) from err


def apply_patches(
    model: onnx.ModelProto, recipe: list[str], options: PatchOptions
) -> tuple[onnx.ModelProto, list[dict]]:
    """Apply the named patches top to bottom; return the patched model and a per-step report.

    Each report entry is ``{name, nodes_before, nodes_after, changes}``. The input model is not
    modified. Raises TrtflowError for an unknown patch name (before any work) or a patched model
    that fails ``onnx.checker``.
    """
    unknown = [name for name in recipe if name not in PATCHES]
    if unknown:
        raise TrtflowError(f"unknown patch {unknown[0]!r}", f"use one of: {', '.join(PATCHES)}")
    graph = gs.import_onnx(model)
    report: list[dict] = []
    for name in recipe:
        nodes_before = len(graph.nodes)
        changes: list[str] = []
        token = _CHANGES.set(changes)
        try:
            graph = PATCHES[name](graph, options)
        finally:
            _CHANGES.reset(token)
        graph.cleanup().toposort()
        report.append(
            {
                "name": name,
                "nodes_before": nodes_before,
                "nodes_after": len(graph.nodes),
                "changes": changes,
            }
        )
        log.info(
            "patch %s: %d -> %d nodes, %d change(s)",
            name,
            nodes_before,
            len(graph.nodes),
            len(changes),
        )
    patched = _export(graph, model)
    _check(patched, f"model patched with {recipe}")
    for entry in io_contract(patched):
        log.info(
            "contract %s %r: %s %s",
            entry["kind"],
            entry["name"],
            entry["dtype"],
            _fmt_shape(entry["shape"]),
        )
    return patched, report


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


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def io_contract(model: onnx.ModelProto) -> list[dict]:
    """The model's interface: one ``{name, shape, dtype, kind}`` per graph input and output.

    ``shape`` holds ints for static dims and strings for symbolic ones (None if unnamed);
    ``dtype`` is the numpy name (``float32``, ``int32``...); ``kind`` is input or output.
    """
    initializers = {init.name for init in model.graph.initializer}
    entries: list[dict] = []

    def add(value_info: onnx.ValueInfoProto, kind: str) -> None:
        elem_type = value_info.type.tensor_type.elem_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = onnx.TensorProto.DataType.Name(elem_type).lower()
        entries.append(
            {"name": value_info.name, "shape": _dims(value_info), "dtype": dtype, "kind": kind}
        )

    for value_info in model.graph.input:
        if value_info.name not in initializers:
            add(value_info, "input")
    for value_info in model.graph.output:
        add(value_info, "output")
    return entries


# Patches kept in modules of their own register themselves when imported.
from trtflow import decode_rewrite as _decode_rewrite  # noqa: E402,F401
