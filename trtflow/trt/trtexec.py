"""trtexec command lines (build / benchmark / parity) and parsers of its JSON exports.

The argv builders take device-side paths and return lists (never shell strings); the version
differences come from trtflow.trt.targets.GENERATIONS. The parsers read what ``--exportTimes``,
``--exportProfile`` and ``--exportOutput`` write (not the log text), in the formats of
TensorRT 8.x and 10.x (see tests/data/trtexec/ for samples).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.core.stats import percentiles
from trtflow.trt.targets import generation, version_from_tag


def shape_arg(name: str, shape: Sequence[int]) -> str:
    """``images:1x3x320x320`` (trtexec's shape syntax)."""
    return f"{name}:{'x'.join(str(int(d)) for d in shape)}"


def precision_flags(precision: str, calibration_cache: str | None, qdq: bool) -> list[str]:
    """--fp16 / --int8 [--calib=...] / --best; fp32 is the default (no flag)."""
    if precision == "fp32":
        return []
    if precision == "fp16":
        return ["--fp16"]
    if precision in ("int8", "best"):
        flags = ["--int8" if precision == "int8" else "--best"]
        if calibration_cache and not qdq:
            flags.append(f"--calib={calibration_cache}")
        return flags
    raise TrtflowError(f"unknown precision {precision!r}", "use one of: fp32, fp16, int8, best")


def build_argv(
    tensorrt: str,
    *,
    trtexec: str,
    onnx: str,
    engine: str,
    precision: str,
    input_name: str,
    input_shape: Sequence[int | str],
    profile: dict[str, int] | None,
    workspace_mib: int,
    timing_cache: str | None = None,
    calibration_cache: str | None = None,
    qdq: bool = False,
    dla_core: int | None = None,
    log_json: bool = False,
) -> list[str]:
    """The trtexec argv that builds ``engine`` from ``onnx`` on a TensorRT ``tensorrt`` device.

    ``profile`` (min/opt/max batch) applies to an ONNX with a dynamic batch; a static-batch ONNX
    gets no shape flags. ``input_shape`` is the ONNX input's shape (batch first, may be symbolic).
    """
    gen = generation(tensorrt)
    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *gen.onnx_build_flags]
    dynamic_batch = not isinstance(input_shape[0], int) or int(input_shape[0]) <= 0
    if dynamic_batch:
        if profile is None:
            raise TrtflowError(
                f"ONNX input {input_name} has a dynamic batch but no batch profile was given",
                "pass a profile (b1 or b1-4-8)",
            )
        rest = [int(d) for d in input_shape[1:]]
        for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            argv.append(f"{flag}={shape_arg(input_name, [profile[key], *rest])}")
    argv += precision_flags(precision, calibration_cache, qdq)
    argv.append(gen.workspace_flag.format(mib=int(workspace_mib)))
    if timing_cache:
        argv.append(f"--timingCacheFile={timing_cache}")
    if dla_core is not None:
        argv += [f"--useDLACore={int(dla_core)}", "--allowGPUFallback"]
    argv.append("--profilingVerbosity=detailed")
    if gen.build_only_flag:
        argv.append(gen.build_only_flag)
    return argv


def inference_shapes(input_name: str, input_shape: Sequence[int | str], batch: int) -> list[str]:
    """--shapes for an engine with a dynamic batch; nothing for a static one."""
    if isinstance(input_shape[0], int) and int(input_shape[0]) > 0:
        return []
    return [f"--shapes={shape_arg(input_name, [batch, *[int(d) for d in input_shape[1:]]])}"]


def benchmark_argv(
    tensorrt: str,
    *,
    trtexec: str,
    engine: str,
    input_name: str,
    input_shape: Sequence[int | str],
    batch: int,
    times_json: str,
    profile_json: str | None,
    warmup_ms: int = 200,
    iterations: int = 100,
    duration_s: int = 0,
    use_cuda_graph: bool = False,
    no_data_transfers: bool = False,
    dla_core: int | None = None,
) -> list[str]:
    """trtexec --loadEngine with --exportTimes (and --exportProfile in a separate run)."""
    generation(tensorrt)  # known version, or a clear error
    argv = [trtexec, f"--loadEngine={engine}", *inference_shapes(input_name, input_shape, batch)]
    argv += [
        f"--warmUp={int(warmup_ms)}",
        f"--iterations={int(iterations)}",
        f"--duration={int(duration_s)}",
        f"--exportTimes={times_json}",
    ]
    if profile_json:
        argv += [f"--exportProfile={profile_json}", "--separateProfileRun"]
    if use_cuda_graph:
        argv.append("--useCudaGraph")
    if no_data_transfers:
        argv.append("--noDataTransfers")
    if dla_core is not None:
        argv.append(f"--useDLACore={int(dla_core)}")
    return argv


def parity_argv(
    tensorrt: str,
    *,
    trtexec: str,
    engine: str,
    input_name: str,
    input_shape: Sequence[int | str],
    batch: int,
    input_bin: str,
    output_json: str,
    dla_core: int | None = None,
) -> list[str]:
    """trtexec --loadEngine --loadInputs=<raw binary> --exportOutput=<json>, one inference."""
    generation(tensorrt)
    argv = [trtexec, f"--loadEngine={engine}", *inference_shapes(input_name, input_shape, batch)]
    argv += [
        f"--loadInputs={input_name}:{input_bin}",
        f"--exportOutput={output_json}",
        "--warmUp=0",
        "--iterations=1",
        "--duration=0",
    ]
    if dla_core is not None:
        argv.append(f"--useDLACore={int(dla_core)}")
    return argv


# ---------------------------------------------------------------- log probes

_BANNER = re.compile(r"&&&& (?:RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT (v\d+)\]")
_DEVICE = re.compile(r"Selected Device: (.+?)\s*$", re.M)
_ERROR_LINE = re.compile(r"(\[E\]|ERROR|Error|error:|out of memory|Unknown option)")
_OOM = re.compile(
    r"out of memory|OutOfMemory|cudaErrorMemoryAllocation|Requested amount of GPU memory"
    r"|insufficient memory|std::bad_alloc",
    re.I,
)


def probe_log(text: str) -> dict[str, str | None]:
    """TensorRT version and device as the trtexec on the target reports them."""
    m = _BANNER.search(text)
    d = _DEVICE.search(text)
    return {
        "tensorrt": version_from_tag(m.group(1)) if m else None,
        "device": d.group(1).strip() if d else None,
    }


def is_out_of_memory(text: str) -> bool:
    return bool(_OOM.search(text))


def error_lines(text: str, limit: int = 6) -> str:
    """The device's own error lines (last ``limit``), for the one-line failure message."""
    lines = [ln.strip() for ln in text.splitlines() if _ERROR_LINE.search(ln)]
    lines = [ln for ln in lines if not ln.startswith("&&&& RUNNING")]
    if not lines:
        lines = [ln.strip() for ln in text.strip().splitlines()[-limit:]]
    return " | ".join(lines[-limit:])


# ---------------------------------------------------------------- JSON export parsers


def _load(path: str | Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise TrtflowError(
            f"{path}: cannot read trtexec {what} export ({exc})",
            "check the trtexec log next to it; the run may have failed before writing it",
        ) from exc


def _stats(values: Sequence[float]) -> dict[str, float]:
    return percentiles(values) if len(values) else {}


def _first(entry: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        if k in entry:
            return float(entry[k])
    return None


def parse_times(path: str | Path, batch: int = 1) -> dict[str, Any]:
    """Summarise ``--exportTimes``: GPU compute and host latency separately, p50/p90/p99.

    Accepts every generation's keys: 7.x ``inMs``/``outMs``/``startInMs``…, 8.x/10.x
    ``h2dMs``/``d2hMs``/``startH2dMs``…; ``latencyMs`` is the host latency (H2D + compute +
    D2H), ``computeMs`` the GPU compute time.
    """
    data = _load(path, "--exportTimes")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise TrtflowError(f"{path}: --exportTimes is not a non-empty list of timings", None)
    compute, latency, h2d, d2h, enq = [], [], [], [], []
    starts, ends = [], []
    for e in data:
        c = _first(e, "computeMs")
        lat = _first(e, "latencyMs")
        if c is None or lat is None:
            raise TrtflowError(
                f"{path}: a timing entry lacks computeMs/latencyMs ({sorted(e)})",
                "is this an --exportTimes file?",
            )
        compute.append(c)
        latency.append(lat)
        if (v := _first(e, "h2dMs", "inMs")) is not None:
            h2d.append(v)
        if (v := _first(e, "d2hMs", "outMs")) is not None:
            d2h.append(v)
        if "startEnqMs" in e and "endEnqMs" in e:
            enq.append(float(e["endEnqMs"]) - float(e["startEnqMs"]))
        s = _first(e, "startH2dMs", "startInMs", "startEnqMs", "startComputeMs")
        t = _first(e, "endD2hMs", "endOutMs", "endComputeMs")
        if s is not None and t is not None:
            starts.append(s)
            ends.append(t)
    n = len(data)
    wall_ms = (max(ends) - min(starts)) if starts else float(sum(latency))
    qps = n * 1e3 / wall_ms if wall_ms > 0 else 0.0
    return {
        "iterations": n,
        "gpu_compute": _stats(compute),
        "host_latency": _stats(latency),
        "h2d": _stats(h2d),
        "d2h": _stats(d2h),
        "enqueue": _stats(enq),
        "wall_ms": wall_ms,
        "throughput_qps": qps,
        "throughput_ips": qps * batch,
    }


def parse_profile(path: str | Path, top: int = 10) -> dict[str, Any]:
    """Summarise ``--exportProfile``: ``[{"count": N}, {name, timeMs, averageMs, [medianMs],
    percentage}, ...]`` -> iterations profiled and the ``top`` slowest layers."""
    data = _load(path, "--exportProfile")
    if not isinstance(data, list) or not data or "count" not in data[0]:
        raise TrtflowError(
            f"{path}: --exportProfile does not start with a {{'count': N}} entry", None
        )
    layers = [
        {
            "name": e["name"],
            "time_ms": float(e["timeMs"]),
            "average_ms": float(e["averageMs"]),
            "median_ms": float(e["medianMs"]) if "medianMs" in e else None,
            "percentage": float(e["percentage"]),
        }
        for e in data[1:]
    ]
    layers.sort(key=lambda x: x["time_ms"], reverse=True)
    return {
        "profiled_iterations": int(data[0]["count"]),
        "layers": len(layers),
        "total_average_ms": float(sum(x["average_ms"] for x in layers)),
        "slowest_layers": layers[:top],
    }


def parse_dimensions(dims: str | Sequence[int]) -> list[int]:
    """trtexec writes dimensions as '1x25200x85' (a list is accepted too)."""
    if isinstance(dims, str):
        return [int(d) for d in dims.split("x") if d != ""]
    return [int(d) for d in dims]


def parse_outputs(path: str | Path) -> dict[str, np.ndarray]:
    """``--exportOutput``: ``[{name, dimensions: "1x6300x85", values: [...]}, ...]`` -> arrays."""
    data = _load(path, "--exportOutput")
    if not isinstance(data, list):
        raise TrtflowError(f"{path}: --exportOutput is not a list of tensors", None)
    out: dict[str, np.ndarray] = {}
    for e in data:
        shape = parse_dimensions(e["dimensions"])
        values = np.asarray(e["values"], dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise TrtflowError(
                f"{path}: output {e['name']} has {values.size} values for dimensions {shape}",
                "re-run the parity job; the export may be truncated",
            )
        out[e["name"]] = values.reshape(shape)
    return out
