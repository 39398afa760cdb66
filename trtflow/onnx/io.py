"""ONNX files and their I/O contract: loading (one line if missing or corrupt), I/O, layouts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


def load_onnx(path: str | Path, load_external_data: bool = True, what: str = "ONNX model") -> Any:
    """``onnx.load`` of ``path``; TrtflowError naming the path when it is missing, a folder or
    not an ONNX protobuf."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise TrtflowError(f"{path}: {what} {state}", f"point it at an existing .onnx {what} file")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, OSError) as exc:
        raise TrtflowError(
            f"{path}: not an ONNX model ({type(exc).__name__}: {exc})",
            "regenerate it (rerun the stage that wrote it) or point at a valid .onnx file",
        ) from None


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


def input_contract(model: onnx.ModelProto) -> list[dict]:
    """The inputs of ``io_contract``: one ``{name, shape, dtype}`` per graph input."""
    return [
        {key: e[key] for key in ("name", "shape", "dtype")}
        for e in io_contract(model)
        if e["kind"] == "input"
    ]


def image_layout(shape: list[Any]) -> str | None:
    """``"NCHW"`` or ``"NHWC"`` for a 4-D image input shape with 3 channels (None if neither)."""
    if len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    return None


def to_layout(x: np.ndarray, layout: str, shape: list[Any]) -> np.ndarray:
    """Images ``x`` (in ``layout``, "NCHW" or "NHWC") as an ONNX input of ``shape`` takes them."""
    wanted = image_layout(shape)
    if wanted is None or wanted == layout:
        return x
    axes = (0, 2, 3, 1) if layout == "NCHW" else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(axes))
