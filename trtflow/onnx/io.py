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


def graph_digest(model: Any) -> str:
    """sha256 of what an ONNX model computes, blind to the names of its initializers.

    tf2onnx's output differs from run to run (the same pb, fresh processes) only in which of
    several equal constants its duplicate merging keeps, i.e. in initializer names; this digest
    replaces every initializer reference by the initializer's dtype, dims and bytes, so two
    conversions that compute bit-identically get the same digest and any other change (a node,
    an attribute, a weight bit, the I/O, the opset) gives another.
    """
    import hashlib

    h = hashlib.sha256()
    graph = model.graph
    inits = {}
    for t in graph.initializer:
        nameless = type(t)()
        nameless.CopyFrom(t)
        nameless.ClearField("name")
        inits[t.name] = hashlib.sha256(nameless.SerializeToString(deterministic=True)).hexdigest()
    for key in sorted(inits.values()):
        h.update(key.encode())
    for node in graph.node:
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[:] = [f"<init {inits[i]}>" if i in inits else i for i in node.input]
        h.update(copy.SerializeToString(deterministic=True))
    for part in (graph.input, graph.output, graph.value_info, model.opset_import):
        for item in part:
            h.update(item.SerializeToString(deterministic=True))
    h.update(f"{model.ir_version} {model.producer_name} {model.producer_version}".encode())
    h.update(f"{model.doc_string} {graph.name} {graph.doc_string}".encode())
    return h.hexdigest()
