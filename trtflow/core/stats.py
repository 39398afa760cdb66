"""Latency statistics shared by the ONNX Runtime and TensorRT benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """mean/min/p50/p90/p99/max of a list of latencies (ms)."""
    arr = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "mean_ms": float(arr.mean()),
        "min_ms": float(arr.min()),
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
    }
