"""Stage "benchmark_onnx" (convert host): ONNX Runtime CPU latency and throughput."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trtflow.core.commands import report_command
from trtflow.core.cpu import cpu_info
from trtflow.core.manifest import write_json
from trtflow.core.stats import percentiles
from trtflow.onnx.io import load_onnx
from trtflow.onnx.ort import input_for, make_session, time_callable

log = logging.getLogger(__name__)


def benchmark_onnx(
    onnx_path: str | Path,
    out_json: str | Path,
    batch: int = 1,
    warmup: int = 5,
    iterations: int = 30,
    threads: int = 0,
) -> dict[str, Any]:
    """Time ONNX Runtime on CPU; EfficientNMS_TRT graphs are timed before the plugin."""
    arguments = dict(locals())  # for the report's command
    from trtflow.onnx.plugins import has_nms, strip_nms

    model = load_onnx(onnx_path)
    nms = has_nms(model)
    if nms:
        model = strip_nms(model)
    session = make_session(model, threads)
    feed = input_for(session, batch)
    lat = time_callable(lambda: session.run(None, feed), warmup, iterations)
    stats = percentiles(lat)
    report = {
        "onnx": str(onnx_path),
        "runtime": "onnxruntime-cpu",
        "batch": batch,
        "threads": threads,
        "cpu": cpu_info(),
        "warmup": warmup,
        "iterations": iterations,
        "timed_before_nms": nms,
        **stats,
        "throughput_ips": batch * 1e3 / stats["mean_ms"],
        "latencies_ms": [round(v, 4) for v in lat],
        "command": report_command("benchmark", arguments),
    }
    log.info(
        "%s b%d: p50 %.2f ms p90 %.2f ms p99 %.2f ms, %.1f img/s",
        onnx_path,
        batch,
        stats["p50_ms"],
        stats["p90_ms"],
        stats["p99_ms"],
        report["throughput_ips"],
    )
    write_json(out_json, report)
    return report
