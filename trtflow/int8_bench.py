"""Stage "benchmark_int8" (convert host): Q/DQ INT8 vs fp32 latency, side by side on the CPU.

Both models get ONNX Runtime CPU sessions with the same options and threads (trtflow.bench) and
are timed in alternation — one fp32 run, one INT8 run, repeated — so load from other processes
hits both alike; each run starts after a short pause, so neither session's idle spinning workers
steal the other's cores (``compare_speed``).

Which CPU form of the Q/DQ model is timed depends on what this CPU computes correctly. ONNX
Runtime fuses uint8-activation Convs into integer kernels (``trtflow.quantize.load_for_cpu``:
activations re-encoded as uint8, the stem unfolded; the fast form), but without VNNI/AMX its
x86 U8S8 kernel sums pairs of products in saturating 16-bit lanes, so that form computes other
numbers than TensorRT would. ``probe_int8_kernels`` measures it with one Conv whose products
saturate such lanes, against the exact integer result; an inexact form is not timed as INT8.
The Q/DQ file as written (int8 activations, which ONNX Runtime runs in float between the Q/DQ
pairs) is the numerically safe fallback. The report names the form, the probe results and
the CPU; ``comparable`` is false only if no form was exact.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.bench import input_for, make_session, percentiles
from trtflow.cpu import cpu_info, cpu_label
from trtflow.manifest import write_json
from trtflow.onnxio import load_onnx

log = logging.getLogger(__name__)

#: Pause before each timed run (ms): longer than ONNX Runtime's spin-wait after a run.
GAP_MS = 50.0
#: CPU forms of a Q/DQ model, fastest first: activation type -> what it is.
INT8_FORMS = {
    "u8": "activations re-encoded as uint8, stem unfolded (ONNX Runtime's fused integer kernels)",
    "s8": "the Q/DQ file as written (ONNX Runtime runs most Convs in float between Q/DQ pairs)",
}


def _probe_model(act: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """One quantized 1x1 Conv whose uint8 x int8 products overflow 16-bit pair sums; its input
    and the exact integer result (what TensorRT computes)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    cin, cout, hw = 64, 8, 4
    dtype, zx, lo, hi = (np.uint8, 128, 0, 255) if act == "u8" else (np.int8, 0, -128, 127)
    xq = rng.integers(hi - 40, hi + 1, (1, cin, hw, hw))
    wq = rng.integers(90, 128, (cout, cin))
    sx, sw = np.float32(0.02), np.float32(0.01)
    acc = np.einsum("nchw,oc->nohw", xq - zx, wq)
    sy = np.float32(acc.max() * sx * sw / 100)
    ref = np.clip(np.rint(acc * (sx * sw) / sy) + zx, lo, hi)
    tensors = {"sx": np.array(sx), "zx": np.array(zx, dtype), "sy": np.array(sy),
               "zy": np.array(zx, dtype), "sw": np.full(cout, sw, np.float32),
               "zw": np.zeros(cout, np.int8),
               "w": (wq.reshape(cout, cin, 1, 1) * sw).astype(np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
    ]
    elem = onnx.TensorProto.UINT8 if act == "u8" else onnx.TensorProto.INT8
    graph = helper.make_graph(
        nodes,
        f"probe_{act}",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("yq", elem, None)],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, ((xq - zx) * sx).astype(np.float32), ref


def probe_int8_kernels(act: str) -> dict[str, Any]:
    """Does ONNX Runtime compute exact int8 products for ``act`` ("u8" / "s8") activations on
    this CPU? ``{"fused", "exact", "max_error_lsb"}``: fused = it ran a QLinearConv (else the
    Conv ran in float between the Q/DQ pairs), exact = within one output step of the integer
    result."""
    import tempfile

    import onnx

    model, x, ref = _probe_model(act)
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "probe.opt.onnx"
        got = make_session(model, 1, optimized_path=opt).run(None, {"x": x})[0]
        fused = any(n.op_type == "QLinearConv" for n in onnx.load(str(opt)).graph.node)
    err = int(np.abs(got.astype(np.int64) - ref).max())
    return {"fused": fused, "exact": err <= 1, "max_error_lsb": err}


def cpu_form(int8_onnx: str | Path) -> tuple[str, Any, dict[str, Any]]:
    """The fastest CPU form of a Q/DQ model whose integer kernels are exact on this CPU:
    (form, model, probe of every form tried). Falls back to the fastest form, with every probe
    inexact, when none is (the caller marks the speed not comparable)."""

    from trtflow.quantize import detach_plugins, load_for_cpu

    probes: dict[str, Any] = {}
    for act in INT8_FORMS:
        probes[act] = probe_int8_kernels(act)
        if probes[act]["exact"]:
            break
    chosen = next((a for a, p in probes.items() if p["exact"]), next(iter(INT8_FORMS)))
    if chosen == "u8":
        model = load_for_cpu(int8_onnx)
    else:
        model = detach_plugins(load_onnx(int8_onnx))[0]
    return chosen, model, probes


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
    graph then pays more thread wake-ups (~230 nodes vs ~105 fp32). The INT8 model is timed in
    the CPU form ``cpu_form`` picks; ``comparable`` is false when that form's kernels are not
    exact on this CPU (its speed is then of a model that computes other numbers).
    """
    from trtflow.quantize import load_for_cpu

    form, int8_model, probes = cpu_form(int8_onnx)
    comparable = probes[form]["exact"]
    sessions = {
        "fp32": make_session(load_for_cpu(fp32_onnx), threads, spinning=spinning),
        "int8": make_session(int8_model, threads, spinning=spinning),
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
        "cpu": cpu_info(),
        "int8_form": form,
        "int8_form_note": INT8_FORMS[form],
        "int8_kernel_probes": probes,
        "comparable": comparable,
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
    for act, probe in report["int8_kernel_probes"].items():
        log.info(
            "int8 kernels for %s activations on %s: %s, %s (max error %d output steps)",
            act, cpu_label(report["cpu"]), "fused" if probe["fused"] else "float Conv",
            "exact" if probe["exact"] else "NOT exact", probe["max_error_lsb"],
        )  # fmt: skip
    log.info(
        "b%d threads %d, INT8 form %s: fp32 p50 %.2f ms, INT8 p50 %.2f ms, speedup %.2fx%s",
        batch, threads, report["int8_form"], report["fp32_p50_ms"], report["int8_p50_ms"],
        report["speedup"], "" if report["comparable"] else " (NOT comparable: inexact kernels)",
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
