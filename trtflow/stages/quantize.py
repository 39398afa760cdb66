"""Stages of rules/quantize.smk (convert host): calibration data, Q/DQ INT8, cache, the gate.

Sample images and calibration arrays, ``quantize_onnx`` (patched ONNX -> Q/DQ ONNX), the TensorRT
calibration cache, ``check_int8_accuracy`` (the INT8 gate) and ``benchmark_int8`` (INT8 vs fp32
on the CPU). The work is in ``trtflow.quant`` and ``trtflow.images``.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.commands import report_command, stage_command
from trtflow.core.cpu import cpu_label
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import (
    atomic_path,
    command_line,
    read_json,
    sha256_path,
    write_json,
    write_manifest,
)
from trtflow.images.detections import coco_map, error_stats, postprocess, recall_at, split_outputs
from trtflow.images.io import PAD_VALUE, _save_npy, list_images, preprocess_files, sample_images
from trtflow.images.scenes import scene
from trtflow.onnx.io import load_onnx
from trtflow.onnx.plugins import detach_plugins, reattach_plugins
from trtflow.quant.accuracy import _labelled_report, _labelled_set, exact_runner
from trtflow.quant.kernels import compare_speed
from trtflow.quant.qdq import (
    CALIB_CHUNK,
    METHODS,
    _read_ranges,
    _Reader,
    model_batches,
)
from trtflow.quant.qdq import float_nodes as kept_float
from trtflow.trt.calibration_cache import trt_cache_text, trt_version_code

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- stage functions
def make_calibration_data(
    images: str | Path,
    calib_npy: str | Path,
    holdout_npy: str | Path,
    image_size: int,
    count: int = 16,
    holdout: int = 32,
    seed: int = 0,
    sampling: str = "random",
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Sample images from ``images`` and write the calibration and held-aside arrays.

    Every image is read and preprocessed before anything is written, so a bad image fails the
    stage with no artifact (and never touches earlier ones).
    """
    started = time.time()
    files = list_images(images)
    calib_files, holdout_files = sample_images(files, count, holdout, seed, sampling)
    calib = preprocess_files(calib_files, image_size)
    held = preprocess_files(holdout_files, image_size)
    _save_npy(holdout_npy, held)
    _save_npy(calib_npy, calib)
    log.info(
        "%s: %d images found, %d calibration + %d held aside (%s, seed %d) -> %s %s, %s %s",
        images, len(files), len(calib_files), len(holdout_files), sampling, seed,
        calib_npy, calib.shape, holdout_npy, held.shape,
    )  # fmt: skip
    opts = {"image_size": image_size, "count": count, "holdout": holdout, "seed": seed,
            "sampling": sampling, "pad_value": PAD_VALUE, "layout": "NCHW RGB 0-1"}  # fmt: skip
    command = stage_command(
        "calibrate", images=images, calib_npy=calib_npy, holdout_npy=holdout_npy,
        image_size=image_size, count=count, holdout=holdout, seed=seed, sampling=sampling,
    )  # fmt: skip
    return write_manifest(
        calib_npy,
        stage="make_calibration_data",
        inputs={},
        options=opts,
        command=command,
        started=started,
        extra={
            "images_folder": str(images),
            "images_found": len(files),
            "calibration_images": [{"file": f.name, "sha256": sha256_path(f)} for f in calib_files],
            "holdout_images": [{"file": f.name, "sha256": sha256_path(f)} for f in holdout_files],
            "holdout_npy": str(holdout_npy),
        },
        manifest_path=manifest_path,
    )


def make_sample_images(
    out_dir: str | Path, count: int = 24, seed: int = 0, manifest_path: str | Path | None = None
) -> dict[str, Any]:
    """Write ``count`` procedurally generated scenes (JPEG and PNG, varied sizes) to ``out_dir``.

    The built-in calibration set of the default zoo: deterministic for a seed, no download.
    Scenes are not natural photographs: they exercise the pipeline and give the quantizer
    realistic-range inputs, but a trained model should be calibrated on its own domain.
    """
    from PIL import Image

    started = time.time()
    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (640, 480), (720, 1280), (512, 512), (375, 500), (600, 800)]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for i in range(count):
            h, w = sizes[i % len(sizes)]
            img = Image.fromarray(scene(rng, h, w))
            buf = io.BytesIO()
            if i % 3 == 2:
                img.save(buf, format="PNG")
                name = f"scene_{i:04d}.png"
            else:
                img.save(buf, format="JPEG", quality=90)
                name = f"scene_{i:04d}.jpg"
            (tmp / name).write_bytes(buf.getvalue())
    log.info("wrote %d procedurally generated scenes to %s", count, out_dir)
    data = {
        "stage": "make_sample_images",
        "artifact": str(out_dir),
        "count": count,
        "seed": seed,
        "kind": "procedurally generated scenes (trtflow.images.scenes.scene)",
        "seconds": round(time.time() - started, 3),
        "command": command_line(
            stage_command("sample-images", out_dir=out_dir, count=count, seed=seed)
        ),
    }
    if manifest_path:
        write_json(manifest_path, data)
    return data


# ---------------------------------------------------------------- stage function
def check_int8_accuracy(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    holdout_npy: str | Path,
    out_json: str | Path,
    score_threshold: float = 0.25,
    top_k: int = 100,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    min_map50_vs_fp32: float = 0.5,
    eval_images: str | Path | None = None,
    eval_annotations: str | Path | None = None,
    eval_count: int = 0,
    max_map_drop: float = 0.02,
    threads: int = 0,
    max_map50_drop: float = 0.01,
    enforce: bool = True,
) -> dict[str, Any]:
    """Compare INT8 with fp32 on the held-aside images; raise below the floors.

    With ``enforce=False`` (the workflow's check_int8_accuracy) a failed gate is written as the
    verdict (``ok: false`` and its ``failures``) instead; check_gates raises later.
    """
    arguments = dict(locals())  # for the report's command
    from trtflow.images.io import load_array

    started = time.time()
    x = load_array(holdout_npy, "held-aside image array")
    fp32, int8 = exact_runner(fp32_onnx, threads), exact_runner(int8_onnx, threads)
    pp = {"score_threshold": score_threshold, "top_k": top_k, "iou_threshold": iou_threshold,
          "max_detections": max_detections}  # fmt: skip
    boxes_f, scores_f = split_outputs(fp32(x))
    boxes_q, scores_q = split_outputs(int8(x))
    ref = [postprocess(b, s, **pp) for b, s in zip(boxes_f, scores_f, strict=True)]
    det = [postprocess(b, s, **pp) for b, s in zip(boxes_q, scores_q, strict=True)]
    size = (x.shape[2], x.shape[3])
    agreement = coco_map(ref, det, scores_f.shape[-1], [size] * len(x), max_detections)
    report: dict[str, Any] = {
        "fp32": str(fp32_onnx),
        "int8": str(int8_onnx),
        "images": int(len(x)),
        "postprocess": pp,
        "errors": {
            "boxes_px": error_stats(boxes_q, boxes_f),
            "scores": error_stats(scores_q, scores_f),
        },
        "detections_per_image_fp32": float(np.mean([len(r["boxes"]) for r in ref])),
        "detections_per_image_int8": float(np.mean([len(d["boxes"]) for d in det])),
        "map_vs_fp32": agreement["map50_95"],
        "map50_vs_fp32": agreement["map50"],
        "recall50_vs_fp32": recall_at(ref, det),
        "min_map50_vs_fp32": min_map50_vs_fp32,
    }
    log.info(
        "%d held-aside images: boxes max abs %.3g px (SQNR %.1f dB), scores max abs %.3g; "
        "INT8 vs fp32 mAP@.5:.95 %.3f, mAP@.5 %.3f (floor %.3f), recall@.5 %.3f",
        len(x), report["errors"]["boxes_px"]["max_abs"], report["errors"]["boxes_px"]["sqnr_db"],
        report["errors"]["scores"]["max_abs"], agreement["map50_95"], agreement["map50"],
        min_map50_vs_fp32, report["recall50_vs_fp32"],
    )  # fmt: skip
    failures = []
    if agreement["map50"] < min_map50_vs_fp32:
        failures.append(
            f"INT8 vs fp32 detection agreement mAP@.5 {agreement['map50']:.3f} < floor "
            f"{min_map50_vs_fp32} (int8.gate.min_map50_vs_fp32)"
        )
    if eval_images and eval_annotations:
        gt, used, xe, cats = _labelled_set(eval_images, eval_annotations, size[0], eval_count)
        dets = {}
        for name, model in (("fp32", fp32), ("int8", int8)):
            b, s = split_outputs(model(xe))
            dets[name] = [postprocess(bi, si, **pp) for bi, si in zip(b, s, strict=True)]
        report["labelled"], why = _labelled_report(
            gt, used, dets, cats, max_detections, max_map_drop, max_map50_drop
        )
        report["labelled"].update(images=str(eval_images), annotations=str(eval_annotations))
        failures += why
    report["ok"] = not failures
    report["failures"] = failures
    report["seconds"] = round(time.time() - started, 3)
    if failures and enforce:
        raise TrtflowError(
            f"INT8 accuracy gate failed for {int8_onnx}: " + "; ".join(failures),
            "calibrate on more/representative images (calibration.count, calibration.images), try "
            "int8.method entropy/percentile, or keep more nodes float (int8.float_nodes)",
        )
    for f in failures:
        log.warning("INT8 gate FAILED (written as the verdict; check_gates fails the run): %s", f)
    report["command"] = report_command("int8-gate", arguments)
    write_json(out_json, report)
    return report


def benchmark_int8(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    out_json: str | Path,
    batch: int = 1,
    warmup: int = 5,
    iterations: int = 30,
    threads: int = 0,
) -> dict[str, Any]:
    """Time the INT8 ONNX against the fp32 ONNX on the CPU (one job, side by side), logged and
    written to ``out_json``."""
    arguments = dict(locals())  # for the report's command
    report = compare_speed(fp32_onnx, int8_onnx, batch, warmup, iterations, threads)
    report["command"] = report_command("benchmark-int8", arguments)
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


# ---------------------------------------------------------------- stage functions
def quantize_onnx(
    onnx_in: str | Path,
    calib_npy: str | Path,
    onnx_out: str | Path,
    ranges_out: str | Path,
    method: str = "minmax",
    percentile: float = 99.999,
    float_decode: bool = True,
    float_head_convs: bool = False,
    float_nodes: Iterable[str] = (),
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Calibrate ``onnx_in`` on ``calib_npy`` and write the Q/DQ ONNX and its activation ranges.

    ``float_decode``, ``float_head_convs`` and ``float_nodes`` (fnmatch globs of node names)
    choose the nodes that stay float, as the config keys of the same names (int8.*).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from trtflow.images.io import load_array

    started = time.time()
    if method not in METHODS:
        raise TrtflowError(
            f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}"
        )
    if not Path(onnx_in).is_file():
        raise TrtflowError(f"{onnx_in}: ONNX file not found", "run patch_onnx first")
    calib = load_array(calib_npy)
    model = load_onnx(onnx_in)
    stripped, plugins, outputs = detach_plugins(model)
    keep = kept_float(stripped, float_decode, float_head_convs, float_nodes)
    input_name, batches = model_batches(stripped, calib)
    log.info(
        "%d nodes stay float: %s", len(keep), ", ".join(keep[:8]) + (" …" if len(keep) > 8 else "")
    )

    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,  # TensorRT: zero point 0
        "WeightSymmetric": True,
        "QDQKeepRemovableActivations": True,  # TensorRT fuses activations itself
        "AddQDQPairToWeight": True,  # float weights + Q/DQ: parsed by TensorRT 8.x and 10.x
        "QuantizeBias": False,  # TensorRT takes float biases
        "CalibPercentile": percentile,
    }
    chunk = next(c for c in range(min(CALIB_CHUNK, len(batches)), 0, -1) if len(batches) % c == 0)
    if chunk < len(batches):
        extra["CalibStridedMinMax"] = chunk  # ORT's name; it chunks every method's collection
    with tempfile.TemporaryDirectory(prefix="trtflow-quant-") as tmpdir:
        src = Path(tmpdir) / "model.onnx"
        onnx.save(stripped, str(src))
        cache = Path(tmpdir) / "ranges.json"
        qdq_tmp = Path(tmpdir) / "model.qdq.onnx"
        try:
            quantize_static(
                str(src),
                str(qdq_tmp),
                _Reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
                calibrate_method=calibrate_method,
                extra_options=extra,
                calibration_cache_path=str(cache),
            )
        except (ValueError, RuntimeError) as exc:
            raise TrtflowError(
                f"ONNX Runtime quantization of {onnx_in} failed ({type(exc).__name__}: {exc})",
                "check the patched ONNX runs in ONNX Runtime and the calibration array matches it",
            ) from exc
        ranges = _read_ranges(cache)
        qdq = onnx.load(str(qdq_tmp))
    onnx.checker.check_model(qdq)  # before the plugins: the checker does not know them
    qdq = reattach_plugins(qdq, plugins, outputs)
    float_tensors = sorted(
        {o for n in stripped.graph.node if n.name in set(keep) for o in n.output}
    )
    with atomic_path(onnx_out) as tmp:
        onnx.save(qdq, str(tmp))
    ops = [n.op_type for n in qdq.graph.node]
    write_json(
        ranges_out,
        {
            "method": method,
            "percentile": percentile if method == "percentile" else None,
            "source": str(onnx_in),
            "source_sha256": sha256_path(onnx_in),
            "calibration_sha256": sha256_path(calib_npy),
            "images": int(len(calib)),
            "float_nodes": keep,
            "float_tensors": float_tensors,
            "ranges": ranges,
        },
    )
    log.info(
        "%s: %d QuantizeLinear, %d DequantizeLinear, %d activation ranges (%s, %d images)",
        onnx_out, ops.count("QuantizeLinear"), ops.count("DequantizeLinear"), len(ranges), method,
        len(calib),
    )  # fmt: skip
    opts = {"method": method, "percentile": percentile, "float_decode": float_decode,
            "float_head_convs": float_head_convs,
            "float_nodes": list(float_nodes), "per_channel": True,
            "activation_type": "int8", "weight_type": "int8", "symmetric": True,
            "extra_options": extra}  # fmt: skip
    command = stage_command(
        "quantize", onnx_in=onnx_in, calib_npy=calib_npy, onnx_out=onnx_out,
        ranges_out=ranges_out, method=method, percentile=percentile, float_decode=float_decode,
        float_head_convs=float_head_convs, float_nodes=list(float_nodes),
    )  # fmt: skip
    return write_manifest(
        onnx_out,
        stage="quantize_onnx",
        inputs={"onnx": onnx_in, "calibration": calib_npy},
        options=opts,
        command=command,
        started=started,
        extra={
            "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
            "nodes": len(qdq.graph.node),
            "quantize_linear": ops.count("QuantizeLinear"),
            "dequantize_linear": ops.count("DequantizeLinear"),
            "float_nodes": keep,
            "plugins": [n.name for n in plugins],
            "ranges": str(ranges_out),
        },
        manifest_path=manifest_path,
    )


def write_trt_calibration_cache(
    ranges_json: str | Path,
    cache_out: str | Path,
    trt_version: str,
    trt_cache_algorithm: str = "EntropyCalibration2",
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """TensorRT implicit-INT8 calibration cache for TensorRT ``trt_version`` from ``ranges.json``.

    Tensors of nodes kept in float for the Q/DQ model get no entry, so TensorRT runs the decode
    in float in implicit mode too.
    """
    started = time.time()
    try:
        data = read_json(ranges_json)
        ranges = data["ranges"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise TrtflowError(
            f"{ranges_json} is not a ranges file ({exc})", "rerun quantize_onnx"
        ) from None
    text, left_out = trt_cache_text(
        ranges, trt_version, trt_cache_algorithm, data.get("float_tensors", [])
    )
    with atomic_path(cache_out) as tmp:
        tmp.write_text(text)
    entries = text.count("\n") - 1
    log.info(
        "%s: %s, %d tensors (%d left out)",
        cache_out,
        text.split("\n", 1)[0],
        entries,
        len(left_out),
    )
    return write_manifest(
        cache_out,
        stage="write_calibration_cache",
        inputs={"ranges": ranges_json},
        options={"tensorrt_version": trt_version, "algorithm": trt_cache_algorithm},
        command=stage_command(
            "trt-cache",
            ranges_json=ranges_json,
            cache_out=cache_out,
            trt_version=trt_version,
            trt_cache_algorithm=trt_cache_algorithm,
        ),
        started=started,
        extra={
            "header": text.split("\n", 1)[0],
            "tensorrt_version_code": trt_version_code(trt_version),
            "entries": entries,
            "left_out": left_out,
            "source_onnx": data.get("source"),
            "source_sha256": data.get("source_sha256"),
            "method": data.get("method"),
        },
        manifest_path=manifest_path,
    )
