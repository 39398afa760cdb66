"""TensorRT-RTX (``import tensorrt_rtx``): a real TensorRT ONNX parser and builder on any host.

TensorRT-RTX's Python API is TensorRT 10's (``Builder``, ``OnnxParser``, ``create_network(0)``,
optimization profiles, timing cache, ``build_serialized_network``); its parser and its
ahead-of-time builder run without a GPU, so every host can check an ONNX against a real
TensorRT parser and build real engines. Running an engine needs an NVIDIA GPU of one of the
compute capabilities it was built for (8.0/8.6/8.9/12.x; no Hopper). It ships no plugins and
has no FP16/INT8 builder flags: networks are strongly typed, precision comes from the ONNX.

The module is imported lazily: importing this file costs nothing and works without the wheel.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


MODULE = "tensorrt_rtx"
#: pip requirement of the pinned stack (requirements.txt)
REQUIREMENT = "tensorrt-rtx==1.7.1.116"


def available() -> bool:
    """Whether ``tensorrt_rtx`` is installed (found without importing it)."""
    return importlib.util.find_spec(MODULE) is not None


def module() -> Any:
    """The ``tensorrt_rtx`` module, or a clear error."""
    try:
        import tensorrt_rtx
    except ImportError as exc:
        raise TrtflowError(
            "TensorRT-RTX is not installed on this host",
            f"pip install {REQUIREMENT} (it is in requirements.txt; no GPU is needed to parse "
            "and build)",
        ) from exc
    return tensorrt_rtx


def version() -> str:
    return str(module().__version__)


def make_logger(trt: Any) -> Any:
    """A TensorRT ILogger that forwards to Python logging (parser errors stay in the job log)."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "[TRT-RTX] %s", msg)

    return _Logger()


@dataclass(frozen=True)
class ParserError:
    """One node the ONNX parser rejected, in the parser's own words."""

    onnx: str
    node: int  # index of the node in the graph (-1: not tied to a node)
    name: str
    op: str
    code: str
    message: str  # str() of the parser error, verbatim


def parse_onnx(onnx_path: str | Path) -> list[ParserError]:
    """Parse ``onnx_path`` with TensorRT-RTX's ONNX parser; every error it reports (empty = ok)."""
    trt = module()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [
        ParserError(
            onnx=str(onnx_path),
            node=int(e.node()),
            name=str(e.node_name()),
            op=str(e.node_operator()),
            code=str(e.code()).split(".")[-1],
            message=str(e),
        )
        for e in (parser.get_error(i) for i in range(parser.num_errors))
    ]
    if not ok and not errors:
        errors.append(ParserError(str(onnx_path), -1, "", "", "UNKNOWN", "the parser failed"))
    for e in errors:
        log.info("TensorRT-RTX %s parser: %s", trt.__version__, e.message)
    return errors
