"""TensorRT calibration caches: the text format, per TensorRT version."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.quant.qdq import TRT_ALGORITHMS
from trtflow.trt.targets import version_code

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- TensorRT calibration cache
def trt_version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for "major.minor.patch" (8.6.1 -> 8601, 10.3.0 -> 100300),
    from the version table (``trt.targets.version_code``); a malformed version is refused."""
    try:
        parts = [int(p) for p in version.split(".")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or parts[0] < 1:
        raise TrtflowError(
            f"TensorRT version {version!r} is not major.minor.patch", 'use e.g. "8.6.1"'
        )
    return version_code(version)


def scale_hex(amax: float) -> str:
    """amax/127 as the big-endian float32 hex TensorRT writes in a calibration cache."""
    return struct.pack(">f", np.float32(amax / 127.0)).hex()


def trt_cache_text(
    ranges: dict[str, list[float]],
    version: str,
    algorithm: str = "EntropyCalibration2",
    skip: Iterable[str] = (),
) -> tuple[str, list[str]]:
    """TensorRT calibration cache text and the tensors left out (zero/non-finite range or skip)."""
    if algorithm not in TRT_ALGORITHMS:
        raise TrtflowError(
            f"unknown TensorRT calibrator algorithm {algorithm!r}",
            f"use one of: {', '.join(TRT_ALGORITHMS)}",
        )
    lines = [f"TRT-{trt_version_code(version)}-{algorithm}"]
    skip = set(skip)
    left_out = []
    for name, (lo, hi) in sorted(ranges.items()):
        amax = max(abs(lo), abs(hi))
        if name in skip or not np.isfinite(amax) or amax <= 0:
            left_out.append(name)
            continue
        lines.append(f"{name}: {scale_hex(amax)}")
    return "\n".join(lines) + "\n", left_out


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a TensorRT calibration cache."""
    lines = Path(path).read_text().splitlines()
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return lines[0], scales
