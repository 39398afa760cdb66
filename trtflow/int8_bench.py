"""Stage "benchmark_int8" (convert host): Q/DQ INT8 vs fp32 latency, side by side on the CPU.

Both models get ONNX Runtime CPU sessions with the same options and threads (trtflow.bench) and
are timed in alternation — one fp32 run, one INT8 run, repeated — so load from other processes
hits both alike; each run starts after a short pause, so neither session's idle spinning workers
steal the other's cores (``compare_speed``). The Q/DQ model is run as
``trtflow.quantize.load_for_cpu`` prepares it (activation Q/DQ re-encoded as uint8, the 6x6 stem
unfolded: the same numbers), the way ONNX Runtime's x86 INT8 kernels (VNNI/AMX) take it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from trtflow.bench import input_for, make_session, percentiles
from trtflow.manifest import write_json

log = logging.getLogger(__name__)

#: Pause before each timed run (ms): longer than ONNX Runtime's spin-wait after a run.
GAP_MS = 50.0


def cpu_int8_flags() -> list[str]:
    """The CPU's INT8 dot-product extensions (avx512_vnni, avx_vnni, amx_*), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(set(re.findall(r"\b(avx512_vnni|avx_vnni|amx_\w+)\b", text)))


def compare_speed(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    batch: int = 1,
    warmup: int = 3,
    iterations: int = 20,
    threads: int = 0,
    spinning: bool = True,
    gap_ms: float = GAP_MS,
) -> dict[str, Any]:
    """Time fp32 and INT8 alternately; p50/p90/… of each and the speedup (fp32 p50 / INT8 p50).

    Both sessions use ONNX Runtime's default thread spinning (as a deployed session runs) and
    each timed run starts ``gap_ms`` after the previous one ended, so the other session's idle
    workers have stopped spinning and do not steal its cores (seen as a false 30 % slowdown of
    both models without the gap). ``spinning=False`` times without spinning instead: the INT8
    graph then pays more thread wake-ups (~230 nodes vs ~105 fp32).
    """
    from trtflow.quantize import load_for_cpu

    sessions = {
        "fp32": make_session(load_for_cpu(fp32_onnx), threads, spinning=spinning),
        "int8": make_session(load_for_cpu(int8_onnx), threads, spinning=spinning),
    }
    feed = input_for(sessions["fp32"], batch)
    name = sessions["int8"].get_inputs()[0].name
    feeds = {"fp32": feed, "int8": {name: next(iter(feed.values()))}}
    for key, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[key])
    lat: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(iterations):
        for key, s in sessions.items():
            time.sleep(gap_ms / 1e3)
            t0 = time.perf_counter()
            s.run(None, feeds[key])
            lat[key].append((time.perf_counter() - t0) * 1e3)
    stats = {k: percentiles(v) for k, v in lat.items()}
    return {
        "fp32": str(fp32_onnx),
        "int8": str(int8_onnx),
        "runtime": "onnxruntime-cpu",
        "batch": batch,
        "threads": threads,
        "spinning": spinning,
        "gap_ms": gap_ms,
        "cpu_count": os.cpu_count(),
        "cpu_int8_flags": cpu_int8_flags(),
        "warmup": warmup,
        "iterations": iterations,
        "fp32_p50_ms": stats["fp32"]["p50_ms"],
        "int8_p50_ms": stats["int8"]["p50_ms"],
        "speedup": stats["fp32"]["p50_ms"] / stats["int8"]["p50_ms"],
        "speedup_min": stats["fp32"]["min_ms"] / stats["int8"]["min_ms"],
        "stats": stats,
        "latencies_ms": {k: [round(x, 4) for x in v] for k, v in lat.items()},
    }


def benchmark_int8(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    out_json: str | Path,
    batch: int = 1,
    warmup: int = 3,
    iterations: int = 20,
    threads: int = 0,
) -> dict[str, Any]:
    """compare_speed, logged and written to ``out_json``."""
    report = compare_speed(fp32_onnx, int8_onnx, batch, warmup, iterations, threads)
    log.info(
        "b%d threads %d (%s): fp32 p50 %.2f ms, INT8 p50 %.2f ms, speedup %.2fx",
        batch, threads, ", ".join(report["cpu_int8_flags"]) or "no VNNI/AMX",
        report["fp32_p50_ms"], report["int8_p50_ms"], report["speedup"],
    )  # fmt: skip
    write_json(out_json, report)
    return report


def speedup_table(report: dict[str, Any]) -> str:
    """Markdown table of one compare_speed report."""
    rows = ["| model | p50 ms | p90 ms | min ms |", "|---|---|---|---|"]
    for key in ("fp32", "int8"):
        s = report["stats"][key]
        rows.append(f"| {key} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} |")
    return "\n".join(rows) + "\n"
