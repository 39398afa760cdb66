"""Patched ONNX -> Q/DQ ONNX for TensorRT explicit INT8.

ONNX Runtime's static quantization (``quantize_static``, QDQ format) calibrates the patched ONNX
on ``calib.npy`` and inserts QuantizeLinear/DequantizeLinear pairs the way TensorRT's explicit
quantization expects: INT8, symmetric (zero point 0), per-channel weights (axis 0, kept as float
initializers behind a Q/DQ pair), per-tensor activations, float biases. The detect head's decode
(every node between the last Conv layers and the outputs) stays in float; those last Convs are
INT8 by default (``float_head_convs`` keeps them float).

The activation ranges the quantizer used are written next to the model (``ranges.json``); the
same ranges become TensorRT's implicit-INT8 calibration cache (``write_trt_calibration_cache``)
for TensorRT 8.x targets.

NVIDIA ModelOpt's ONNX PTQ would be the first choice, but it does not install with our pins:
it requires torch and its ``onnx`` extra pins onnx~=1.21, onnxruntime-gpu~=1.24 and cupy-cuda12x
on Linux x86 (README "INT8").
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.images.io import to_layout

log = logging.getLogger(__name__)


METHODS = ("minmax", "entropy", "percentile")
#: Calibrator algorithms TensorRT writes in a cache header (IInt8Calibrator::getAlgorithm()).
TRT_ALGORITHMS = (
    "EntropyCalibration2",
    "MinMaxCalibration",
    "EntropyCalibration",
    "LegacyCalibration",
)
#: Images per ONNX Runtime calibration pass (bounds the memory of the intermediate outputs).
CALIB_CHUNK = 8


# ---------------------------------------------------------------- graph helpers
def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def decode_nodes(model: Any) -> tuple[list[str], list[str]]:
    """(decode nodes, head Convs): nodes between the last Conv layers and the graph outputs.

    Walks back from every graph output until a Conv; those Convs are the detect head's output
    layers, everything passed on the way (reshape/transpose/sigmoid/grid and anchor math,
    concatenation) is the decode.
    """
    prod = _producers(model)
    decode: list[str] = []
    heads: list[str] = []
    seen: set[int] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = prod.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            heads.append(node.name)
            continue
        decode.append(node.name)
        stack.extend(i for i in node.input if i)
    return sorted(decode), sorted(heads)


def float_nodes(
    model: Any,
    keep_decode: bool = True,
    keep_head_convs: bool = False,
    patterns: Iterable[str] = (),
) -> list[str]:
    """Names of the nodes that stay in float (decode, head Convs, glob patterns on node names)."""
    decode, heads = decode_nodes(model)
    names = set(decode if keep_decode else []) | set(heads if keep_head_convs else [])
    patterns = list(patterns)
    for node in model.graph.node:
        if any(fnmatch.fnmatchcase(node.name, p) for p in patterns):
            names.add(node.name)
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n.name, p) for n in model.graph.node):
            log.warning("int8.float_nodes pattern %r matches no node", p)
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed:
        raise TrtflowError(
            f"{len(unnamed)} nodes have no name (first: {unnamed[0].op_type})",
            "run the sanitize patch, which names every node",
        )
    return sorted(names)


# ---------------------------------------------------------------- calibration reader
class _Reader:
    """onnxruntime CalibrationDataReader over a calibration array (supports set_range)."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self.batches = batches
        self.input_name = input_name
        self.start, self.end, self.pos = 0, len(batches), 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, min(end_index, len(self.batches)), start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.end:
            return None
        self.pos += 1
        return {self.input_name: self.batches[self.pos - 1]}


def model_batches(model: Any, x_nchw: np.ndarray) -> tuple[str, list[np.ndarray]]:
    """(input name, batches of ``x_nchw`` in the layout and static batch the model takes)."""

    inp = model.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    x = to_layout(x_nchw, "NCHW", dims)
    size = dims[2:4] if dims[1] == 3 else dims[1:3]
    if all(isinstance(d, int) and d > 0 for d in size) and list(x_nchw.shape[2:]) != size:
        raise TrtflowError(
            f"calibration images are {x_nchw.shape[2]}x{x_nchw.shape[3]}, the model takes {size}",
            "rerun make_calibration_data for this image size",
        )
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    n = len(x) // batch * batch
    if n == 0:
        raise TrtflowError(
            f"{len(x)} calibration images are fewer than the model's static batch {batch}",
            f"set calibration.count to at least {batch}",
        )
    if n < len(x):
        log.warning("static batch %d: using %d of %d calibration images", batch, n, len(x))
    return inp.name, [np.ascontiguousarray(x[i : i + batch]) for i in range(0, n, batch)]


def _read_ranges(cache: Path) -> dict[str, list[float]]:
    """ORT's JSON calibration cache -> {tensor: [low, high]}."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache)
    out = {}
    for name, value in data.data.items():
        lo, hi = value.range_value
        out[name] = [float(np.asarray(lo).min()), float(np.asarray(hi).max())]
    return dict(sorted(out.items()))
