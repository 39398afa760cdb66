"""The zoo summary tables: one row per (model, image size), and one per engine."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trtflow.core.cpu import cpu_label
from trtflow.core.manifest import read_json
from trtflow.reporting.gates import describe

COLUMNS = [
    "model",
    "source",
    "image_size",
    "nodes_raw",
    "nodes_patched",
    "parity_max_abs",
    "parity_max_rel",
    "cpu_p50_ms",
    "cpu_batch",
    "int8_job_fp32_p50_ms",
    "cpu_int8_p50_ms",
    "int8_speedup",
    "int8_cpu_form",
    "int8_map_vs_fp32",
    "map50_fp32",
    "map50_int8",
    "map50_95_fp32",
    "map50_95_int8",
    "pb_mb",
    "onnx_raw_mb",
    "onnx_patched_mb",
    "cpu",
    "gates",
]


def _parts(path: str) -> tuple[str, str]:
    """(model, image size) from results/<stage>/<model>/<imgsz>/..."""
    p = Path(path).parts
    i = p.index("results")
    return p[i + 2], p[i + 3]


def collect_rows(
    pb_manifests: Sequence[str],
    raw_manifests: Sequence[str],
    patched_manifests: Sequence[str],
    parity: Sequence[str],
    bench: Sequence[str],
    int8_bench: Sequence[str] = (),
    int8_gate: Sequence[str] = (),
) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(path: str) -> dict[str, Any]:
        key = _parts(path)
        return rows.setdefault(key, {"model": key[0], "image_size": int(key[1])})

    for p in pb_manifests:
        m = read_json(p)
        row(p).update(source=m["options"]["source"], pb_mb=round(m["size_bytes"] / 1e6, 2))
    for p in raw_manifests:
        m = read_json(p)
        row(p).update(nodes_raw=m["nodes"], onnx_raw_mb=round(m["size_bytes"] / 1e6, 2))
    for p in patched_manifests:
        m = read_json(p)
        row(p).update(nodes_patched=m["nodes"], onnx_patched_mb=round(m["size_bytes"] / 1e6, 2))
    for p in parity:
        m = read_json(p)
        row(p).update(parity_max_abs=f"{m['max_abs']:.3g}", parity_max_rel=f"{m['max_rel']:.3g}")
    for p in bench:  # smallest batch's p50 goes in the table
        m = read_json(p)
        r = row(p)
        if "cpu_batch" not in r or m["batch"] < r["cpu_batch"]:
            r.update(cpu_p50_ms=round(m["p50_ms"], 2), cpu_batch=m["batch"])
            if "cpu" in m:
                r.update(cpu=cpu_label(m["cpu"]))
    # INT8 and the fp32 it is compared with, timed side by side in one job: the speedup is the
    # ratio of these two columns, never of numbers from different jobs
    for p in int8_bench:  # optional (int8.enabled)
        m = read_json(p)
        r = row(p)
        if "_int8_batch" not in r or m["batch"] < r["_int8_batch"]:
            comparable = m.get("comparable", True)
            r.update(cpu_int8_p50_ms=round(m["int8_p50_ms"], 2), _int8_batch=m["batch"],
                     int8_job_fp32_p50_ms=round(m["fp32_p50_ms"], 2),
                     int8_cpu_form=m.get("int8_form", ""),
                     int8_speedup=round(m["speedup"], 2) if comparable
                     else "not comparable (inexact int8 kernels)")  # fmt: skip
    for p in int8_gate:  # mAP@.5 of INT8 detections with fp32's as ground truth
        m = read_json(p)
        row(p).update(int8_map_vs_fp32=round(m["map50_vs_fp32"], 3))
        row(p).update(_labelled_columns(m.get("labelled")))
    for key, gates in describe([*parity, *int8_gate]).items():  # the verdicts, failed or not
        rows[key]["gates"] = gates
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], int(k[1])))]


def _labelled_columns(labelled: dict[str, Any] | None) -> dict[str, float]:
    """mAP@.5 and mAP@.5:.95 of fp32 and INT8 ONNX against the gate's labelled set."""
    if not labelled or "map50_fp32" not in labelled:
        return {}
    keys = {"map50_fp32": "map50_fp32", "map50_int8": "map50_int8",
            "map50_95_fp32": "map_fp32", "map50_95_int8": "map_int8"}  # fmt: skip
    return {col: round(labelled[k], 3) for col, k in keys.items()}


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    out = io.StringIO()
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "|".join("---" for _ in columns) + "|\n")
    for r in rows:
        out.write("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n")
    return out.getvalue()


# -------------------------------------------------------- engines (rule render_engine_summary)
ENGINE_COLUMNS = [
    "target",
    "model",
    "image_size",
    "precision",
    "profile",
    "library",
    "compute_capabilities",
    "engine_mb",
    "build_s",
    "gpu_p50_ms",
    "host_p50_ms",
    "parity_max_abs",
    "status",
]


def collect_engine_rows(
    manifests: Sequence[str],
    bench: Sequence[str] = (),
    parity: Sequence[str] = (),
    not_run: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per engine: from its manifest, plus its benchmark and parity where they ran."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}

    def key(path: str) -> tuple[str, ...]:
        p = Path(path).parts
        i = p.index("results")  # results/<stage>/<target>/<model>/<imgsz>/<precision>/<profile>
        return (*p[i + 2 : i + 6], Path(p[i + 6]).name.split(".")[0])

    for path in manifests:
        m = read_json(path)
        target, model, imgsz, precision, profile = key(path)
        tensorrt = m.get("tensorrt", {})
        rows[key(path)] = {
            "target": target,
            "model": model,
            "image_size": int(imgsz),
            "precision": precision,
            "profile": profile,
            "library": f"{m.get('library') or 'tensorrt'} {tensorrt.get('probed') or ''}".strip(),
            "compute_capabilities": " ".join(m.get("compute_capabilities") or []),
            "engine_mb": round(m["size_bytes"] / 1e6, 2),
            "build_s": m.get("build_seconds"),
            "status": "STAND-IN (not TensorRT)" if m.get("standin") else "built",
        }
        if target in (not_run or {}):
            rows[key(path)]["status"] = (not_run or {})[target]
    for path in bench:
        b = read_json(path)
        r = rows.setdefault(key(path), {})
        r.update(gpu_p50_ms=round(b["gpu_compute"]["p50_ms"], 3),
                 host_p50_ms=round(b["host_latency"]["p50_ms"], 3))  # fmt: skip
        if r.get("status") == "built":
            r["status"] = "built, run"
    for path in parity:
        p = read_json(path)
        if p.get("max_abs") is not None:
            rows.setdefault(key(path), {})["parity_max_abs"] = f"{p['max_abs']:.3g}"
    return [rows[k] for k in sorted(rows)]
