"""What a detector graph is, found from its outputs on test images (export_pb records it).

A user's pb says little about itself: many TF exporters emit xywh normalised to 0-1, order the
rows of each level (y, x, anchor) instead of the built-in (anchor, y, x), and fix the batch at 1.
``discover_detector`` runs the graph on deterministic test images and returns a ``Finding`` per
fact (value, where it came from, the evidence). A configured value always wins; the finding then
says so, and a disagreeing discovery is logged as a warning. Downstream stages read the findings
from the pb manifest with ``recorded``.

Imports TensorFlow lazily (only ``discover_detector`` runs the graph); ``recorded`` is pure.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


#: A box centre never exceeds this in a 0-1 normalised output. YOLOv5 centres lie inside the
#: image up to half a stride (<= 1 + stride/2/size, 1.25 at 64 px); in pixels the largest centre
#: of a level is about the image size (>= 20 at 32 px). Widths are not used: a normalised width
#: may reach 4 * anchor / size (23 for the largest anchor at 64 px).
NORMALIZED_MAX_XY = 1.5
BOX_FORMATS = ("pixels", "normalized")
#: Row order of each level's predictions: the built-in model's (anchor, y, x), or the
#: (y, x, anchor) that TF exporters which reshape [B,H*W,na,no] produce.
DECODE_LAYOUTS = ("anchor_y_x", "y_x_anchor", "unknown")
PROBE_IMAGES = 2
PROBE_SEED = 0


@dataclass(frozen=True)
class Finding:
    """One fact about the model: its value, its source (discovered/configured/graph/default)."""

    value: Any
    source: str
    evidence: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_images(image_size: int, count: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> np.ndarray:
    """Deterministic NHWC float32 test images in [0, 1]."""
    rng = np.random.default_rng(seed)
    return rng.random((count, image_size, image_size, 3), dtype=np.float32)


def check_detector_shape(shape: list[int] | tuple[int, ...] | None, what: str) -> None:
    """Refuse an output that is not [B, N, 5+C] (when its shape is known)."""
    if shape is None:
        return
    fix = (
        "point models.<name>.path at a YOLOv5 detector, or set output_name to its [B,N,5+C] output"
    )
    if len(shape) != 3 or (shape[-1] > 0 and shape[-1] < 6):
        raise TrtflowError(
            f"{what} is {list(shape)}, not a detector output: trtflow expects a YOLOv5-style "
            "[B,N,5+C] tensor (xywh, objectness, C class scores)",
            fix,
        )


def _grid_cells(image_size: int) -> int:
    from trtflow.tf.yolov5 import STRIDES

    return sum((image_size // s) ** 2 for s in STRIDES)


def check_rows(shape: tuple[int, ...], image_size: int, what: str) -> None:
    """Refuse a channels-first [B,5+C,N] output (N anchors x grid cells on the last axis)."""
    cells = _grid_cells(image_size)
    if shape[1] % cells and not shape[2] % cells:
        raise TrtflowError(
            f"{what} is {list(shape)}: its last axis holds the {shape[2]} predictions "
            f"({shape[2] // cells} x {cells} grid cells at {image_size} px), a [B,5+C,N] layout; "
            "trtflow expects a YOLOv5-style [B,N,5+C] tensor (one row per prediction)",
            "export the model with [B,N,5+C] output (transpose the last two axes)",
        )


def discover_box_format(y: np.ndarray) -> Finding:
    """normalized if no box centre exceeds NORMALIZED_MAX_XY on the test images, else pixels."""
    top = float(np.abs(y[..., :2]).max(initial=0.0))
    value = "normalized" if top <= NORMALIZED_MAX_XY else "pixels"
    op = "<=" if value == "normalized" else ">"
    return Finding(
        value,
        "discovered",
        f"max |x|,|y| of the box centres on {len(y)} test images is {top:.3g} "
        f"({op} {NORMALIZED_MAX_XY})",
    )


def _cells(layout: str, image_size: int, anchors: int) -> np.ndarray:
    """[N, 3] (cell x, cell y, stride) of every row in ``layout`` (levels P3, P4, P5)."""
    from trtflow.tf.yolov5 import STRIDES

    out = []
    for stride in STRIDES:
        n = image_size // stride
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells = np.stack([xv.ravel(), yv.ravel(), np.full(n * n, stride)], -1)
        if layout == "anchor_y_x":
            out.append(np.tile(cells, (anchors, 1)))
        else:
            out.append(np.repeat(cells, anchors, axis=0))
    return np.concatenate(out).astype(np.float64)


def discover_decode_layout(y: np.ndarray, image_size: int, box_format: str) -> Finding:
    """The row order whose grid cells contain every decoded box centre.

    YOLOv5 decodes a centre as (2 sigmoid - 0.5 + cell) * stride, so it lies within
    [cell - 0.5, cell + 1.5] strides of its own cell; the right order puts every row there.
    """
    from trtflow.tf.yolov5 import STRIDES

    xy = y[..., :2].astype(np.float64) * (image_size if box_format == "normalized" else 1)
    rows = y.shape[1]
    grid = _grid_cells(image_size)
    if image_size % max(STRIDES) or rows % grid:
        return Finding(
            "unknown",
            "discovered",
            f"{rows} rows are not a whole number of anchors x {grid} cells of strides "
            f"{'/'.join(map(str, STRIDES))} at {image_size} px",
        )
    anchors = rows // grid
    fit = {}
    for layout in DECODE_LAYOUTS[:2]:
        cells = _cells(layout, image_size, anchors)
        lo = (cells[:, :2] - 0.5) * cells[:, 2:]
        hi = (cells[:, :2] + 1.5) * cells[:, 2:]
        tol = 1e-3 * cells[:, 2:]
        inside = ((xy >= lo - tol) & (xy <= hi + tol)).all(axis=-1)
        fit[layout] = float(inside.mean())
    both = ", ".join(f"{k} {v:.1%}" for k, v in fit.items())
    evidence = f"rows whose box centre lies in its own grid cell, per order: {both}"
    fitting = [k for k, v in fit.items() if v == 1.0]
    if anchors == 1 and fitting:
        return Finding("anchor_y_x", "discovered", evidence + " (one anchor: the orders coincide)")
    value = fitting[0] if len(fitting) == 1 else "unknown"
    return Finding(value, "discovered", evidence)


def _configured(name: str, value: Any, found: Finding) -> Finding:
    """The configured value, warning when the discovery disagrees."""
    if value == found.value:
        return Finding(value, "configured", f"agrees with the discovery: {found.evidence}")
    log.warning(
        "%s: configured %s, but discovered %s (%s); using the configured value",
        name,
        value,
        found.value,
        found.evidence,
    )
    return Finding(value, "configured", f"discovery said {found.value}: {found.evidence}")


def discover_detector(
    run: Any,
    io: Any,
    image_size: int,
    source: str | Path,
    box_format: str | None = None,
    decode_layout: str | None = None,
) -> dict[str, Finding]:
    """Run the graph (``run``: NHWC images -> its output) on the test images; return the findings.

    ``io`` is the graph's contract (``tfgraph.GraphIO``). A graph whose output is not
    [B, N, 5+C] raises TrtflowError naming what it found.
    """
    what = f"{source}: output {io.output_name}"
    check_detector_shape(io.output_shape, what)
    shape = io.input_shape or []
    batch = shape[0] if shape and shape[0] > 0 else "dynamic"
    fixed_batch = batch if isinstance(batch, int) else 1
    x = probe_images(image_size, fixed_batch * -(-PROBE_IMAGES // fixed_batch))
    y = np.asarray(run(x))
    check_detector_shape(y.shape, what)
    check_rows(y.shape, image_size, what)
    found: dict[str, Finding] = {}
    found["batch"] = Finding(
        batch,
        "graph",
        f"input {io.input_name} {shape}"
        + (": TF and the raw ONNX are fed in chunks of this batch" if batch != "dynamic" else ""),
    )
    spatial = shape[1:3] if io.layout == "nhwc" else shape[2:4]
    fixed = len(spatial) == 2 and all(d > 0 for d in spatial)
    found["image_size"] = Finding(
        image_size,
        "graph" if fixed else "configured",
        f"input {io.input_name} {shape}" + ("" if fixed else ": spatial dims are dynamic"),
    )
    found["classes"] = Finding(
        int(y.shape[-1]) - 5, "graph", f"output {io.output_name} {list(y.shape)}: [B,N,5+C]"
    )
    box = discover_box_format(y)
    found["box_format"] = _configured("box_format", box_format, box) if box_format else box
    layout = discover_decode_layout(y, image_size, found["box_format"].value)
    found["decode_layout"] = (
        _configured("decode_layout", decode_layout, layout) if decode_layout else layout
    )
    for name, f in found.items():
        log.info("%s: %s (%s: %s)", name, f.value, f.source, f.evidence)
    return found


def recorded(pb_manifest: str | Path | dict[str, Any] | None, name: str, default: Any) -> Any:
    """The value export_pb recorded for ``name`` in the pb manifest, else ``default``."""
    if pb_manifest is None:
        return default
    if not isinstance(pb_manifest, dict):
        from trtflow.core.manifest import read_json

        pb_manifest = read_json(pb_manifest)
    return pb_manifest.get("discovery", {}).get(name, {}).get("value", default)
