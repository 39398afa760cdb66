"""Reading an ONNX file: the one place that turns a missing or corrupt file into one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtflow.errors import TrtflowError


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
