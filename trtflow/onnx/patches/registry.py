"""The patch registry: named graph ops, their options, and the recipe runner."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from trtflow.core.errors import TrtflowError
from trtflow.onnx.io import io_contract
from trtflow.onnx.patches.graph import _check, _export, _fmt_shape

log = logging.getLogger(__name__)


Patch = Callable[[gs.Graph, "PatchOptions"], gs.Graph]


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
    #: Row order of the decoded predictions export_pb recorded (``trtflow.tf.discover``), if known.
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


def check_recipe(recipe: list[str], where: str = "") -> None:
    """Raise (one line, with the known names) if ``recipe`` names a patch that does not exist."""
    unknown = [name for name in recipe if name not in PATCHES]
    if unknown:
        raise TrtflowError(
            f"unknown patch {unknown[0]!r}{' in ' + where if where else ''}",
            f"use one of: {', '.join(PATCHES)}",
        )


def apply_patches(
    model: onnx.ModelProto, recipe: list[str], options: PatchOptions
) -> tuple[onnx.ModelProto, list[dict]]:
    """Apply the named patches top to bottom; return the patched model and a per-step report.

    Each report entry is ``{name, nodes_before, nodes_after, changes}``. The input model is not
    modified. Raises TrtflowError for an unknown patch name (before any work) or a patched model
    that fails ``onnx.checker``.
    """
    check_recipe(recipe)
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
