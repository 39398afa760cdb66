"""Stages "build_engine", "benchmark_engine", "check_engine_parity" (target hosts).

Each stage runs on the target through a transport (trtflow.transport): the inputs are copied
to a per-job work dir on the device, trtexec runs there (or the TensorRT Python API for
``backend: python`` targets, local only), the results come back under a temporary name and
are renamed into place at the end. ``backend: tensorrt-rtx`` targets build with TensorRT-RTX's
Python API (the same code as ``python``, trtflow.trt_python) ahead of time on this host, for the
compute capabilities the target lists; precision comes from the ONNX (patched fp32, fp16 ONNX,
Q/DQ ONNX), since TensorRT-RTX is strongly typed. What the device reports (TensorRT version,
GPU) is checked against what the config declares, and recorded in the manifest next to every
engine.

Nothing here imports TensorRT; nothing here reports a latency that trtexec did not measure.
Outputs of the test stand-in (tests/standin/trtexec) are labelled ``"standin": true``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trtflow import trtexec
from trtflow.errors import TrtflowError
from trtflow.manifest import read_json, sha256_path, write_json, write_manifest
from trtflow.onnxio import load_onnx
from trtflow.targets import (
    HOW_TO_CONFIGURE,
    PYTHON_BACKENDS,
    backend_of,
    generation,
    is_rtx,
    parse_profile,
    same_version,
)
from trtflow.transport import Transport, make_transport

log = logging.getLogger(__name__)

STANDIN_MAGIC = b"TRTFLOW-STANDIN-ENGINE"


def is_standin_engine(path: str | Path) -> bool:
    """True for an engine written by the test stand-in (never a real TensorRT engine)."""
    with open(path, "rb") as fh:
        return fh.read(len(STANDIN_MAGIC)) == STANDIN_MAGIC


@contextlib.contextmanager
def target_lock(target: str) -> Iterator[None]:
    """One job per target at a time on this host: builds share the timing cache, and two
    benchmarks on one GPU would measure each other."""
    path = Path(tempfile.gettempdir()) / f"trtflow-target-{_label(target)}.lock"
    with open(path, "a+") as fh:
        t0 = time.time()
        fcntl.flock(fh, fcntl.LOCK_EX)
        if time.time() - t0 > 1:
            log.info("waited %.1f s for target %s", time.time() - t0, target)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _label(*parts: Any) -> str:
    return re.sub(r"[^\w.-]", "_", "-".join(str(p) for p in parts))


def _check_target_available(target: str, spec: dict[str, Any]) -> None:
    """Fail early, with one clear message, when a local target has no TensorRT here."""
    if spec.get("transport", "local") != "local":
        return
    if is_rtx(spec):
        from trtflow import rtx

        if not rtx.available():
            raise TrtflowError(
                f"target {target!r}: TensorRT-RTX is not installed on this host",
                f"pip install {rtx.REQUIREMENT} (in requirements.txt; no GPU needed to build)",
            )
        return
    if spec.get("backend", "trtexec") == "python":
        from trtflow.trt_python import tensorrt_available

        if not tensorrt_available():
            raise TrtflowError(
                f"target {target!r}: the TensorRT Python bindings are not installed on this "
                "host (TensorRT cannot be installed here)",
                HOW_TO_CONFIGURE,
            )
        return
    exe = spec.get("trtexec") or "trtexec"
    if not (shutil.which(exe) or (os.sep in exe and os.access(exe, os.X_OK))):
        raise TrtflowError(
            f"target {target!r}: trtexec ({exe}) is not found on this host — TensorRT is not "
            "installed here",
            HOW_TO_CONFIGURE,
        )


def _check_probe(target: str, spec: dict[str, Any], output: str) -> dict[str, str | None]:
    """Compare the version/device the device reports with the config's declaration."""
    probed = trtexec.probe_log(output)
    declared = str(spec["tensorrt"])
    if probed["tensorrt"] and not same_version(declared, probed["tensorrt"]):
        raise TrtflowError(
            f"target {target!r} declares TensorRT {declared} but its trtexec reports "
            f"{probed['tensorrt']}",
            f'set targets.{target}.tensorrt: "{probed["tensorrt"]}" (its engines then rebuild)',
        )
    if probed["device"] and spec["device"].lower() not in probed["device"].lower():
        log.warning(
            "target %s declares device %r, trtexec reports %r (engines are tied to the GPU: "
            "set targets.%s.device to match)",
            target,
            spec["device"],
            probed["device"],
            target,
        )
    return probed


def _fail_on_device(target: str, spec: dict[str, Any], what: str, result: Any) -> None:
    """Raise with the device's own message when trtexec failed."""
    if result.returncode == 0:
        return
    msg = trtexec.error_lines(result.output)
    if trtexec.is_out_of_memory(result.output):
        raise TrtflowError(
            f"target {target!r}: {what} ran out of device memory: {msg}",
            f"lower targets.{target}.workspace_mib or the profile's max batch, or free the "
            "device's memory (other processes)",
        )
    raise TrtflowError(
        f"target {target!r}: {what} failed (trtexec exit {result.returncode}): {msg}",
        "read the trtexec output in this job's log; run preflight_engine's checks again",
    )


def _log_output(output: str) -> None:
    for line in output.splitlines():
        log.info("| %s", line)


@contextlib.contextmanager
def _session(target: str, spec: dict[str, Any], label: str) -> Iterator[tuple[Transport, str]]:
    """Lock the target, open a work dir there, always remove it afterwards."""
    transport = make_transport(target, spec)
    with target_lock(target):
        wd = transport.workdir(label)
        log.info("[%s] work dir %s (%s)", target, wd, transport.name)
        try:
            yield transport, wd
        finally:
            transport.cleanup(wd)


def _join(wd: str, name: str) -> str:
    return f"{wd.rstrip('/')}/{name}"


def onnx_input(onnx_path: str | Path) -> dict[str, Any]:
    """The ONNX's (single) image input: name, shape (symbolic batch as a string), dtype."""

    from trtflow.preflight import input_contract

    inputs = input_contract(load_onnx(onnx_path, load_external_data=False))
    if len(inputs) != 1:
        raise TrtflowError(
            f"{onnx_path}: expected one input, found {len(inputs)} "
            f"({', '.join(i['name'] for i in inputs)})",
            "use the patched ONNX (rename_io gives it one 'images' input)",
        )
    return inputs[0]


# ---------------------------------------------------------------- build


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    target: str,
    spec: dict[str, Any],
    precision: str,
    profile: str,
    image_size: int,
    timing_cache: str | Path | None = None,
    calibration_cache: str | Path | None = None,
    qdq_onnx: str | Path | None = None,
    fp16_onnx: str | Path | None = None,
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Build one TensorRT engine of ``onnx_path`` on ``target`` and write its manifest.

    int8 (and best) need a calibration cache or a Q/DQ ONNX (then that ONNX is built).
    TensorRT-RTX targets build fp16 from ``fp16_onnx`` (strongly typed: no fp16 flag).
    The timing cache is per target, shared by its builds, updated after each one.
    """
    started = time.time()
    if precision not in spec.get("precisions", ["fp32", "fp16"]):
        raise TrtflowError(
            f"target {target!r} does not support precision {precision} "
            f"(it supports {', '.join(spec.get('precisions', []))})",
            f"remove it from targets.{target}.precisions or from precisions",
        )
    if precision == "int8" and not (calibration_cache or qdq_onnx):
        raise TrtflowError(
            f"int8 engine of {onnx_path} on target {target!r} needs a calibration cache or a "
            "Q/DQ ONNX, and neither was given",
            "set engine.int8.<model>.calibration_cache or .qdq_onnx (the INT8 stage produces "
            "them), or drop int8 from precisions",
        )
    if is_rtx(spec):
        _check_rtx_sources(target, precision, qdq_onnx, fp16_onnx)
    source = Path(qdq_onnx or (fp16_onnx if is_rtx(spec) else None) or onnx_path)
    prof = parse_profile(profile)
    io = onnx_input(source)
    _check_target_available(target, spec)
    workspace = int(spec.get("workspace_mib", 1024))
    if backend_of(spec) in PYTHON_BACKENDS:
        optional = {"--timing-cache": timing_cache, "--calibration-cache": calibration_cache,
                    "--qdq-onnx": qdq_onnx, "--fp16-onnx": fp16_onnx}  # fmt: skip
        command = [
            "trtflow", "build-engine", "--target", target, "--onnx", str(onnx_path),
            "--out", str(engine_path), "--precision", precision, "--profile", profile,
            "--image-size", str(image_size),
            *[a for flag, v in optional.items() if v for a in (flag, str(v))],
        ]  # fmt: skip
        return _build_python(
            source,
            engine_path,
            target,
            spec,
            precision,
            prof,
            io,
            workspace,
            timing_cache,
            calibration_cache,
            manifest_path,
            started,
            profile,
            image_size,
            command,
        )
    gen = generation(str(spec["tensorrt"]), target)
    argv = trtexec.build_argv(
        str(spec["tensorrt"]),
        trtexec=spec.get("trtexec") or "trtexec",
        onnx="model.onnx",
        engine="model.engine",
        precision=precision,
        input_name=io["name"],
        input_shape=io["shape"],
        profile=prof,
        workspace_mib=workspace,
        timing_cache="timing.cache" if timing_cache else None,
        calibration_cache="calib.cache" if calibration_cache else None,
        qdq=bool(qdq_onnx),
        dla_core=spec.get("dla_core"),
    )
    label = _label(target, Path(source).parent.name, precision, profile)
    with _session(target, spec, label) as (transport, wd):
        transport.put(source, _join(wd, "model.onnx"))
        if calibration_cache:
            transport.put(calibration_cache, _join(wd, "calib.cache"))
        if timing_cache and Path(timing_cache).is_file():
            transport.put(timing_cache, _join(wd, "timing.cache"))
        t0 = time.time()
        result = transport.run(argv, wd)
        build_seconds = time.time() - t0
        _log_output(result.output)
        _fail_on_device(target, spec, f"building the {precision} {profile} engine", result)
        probed = _check_probe(target, spec, result.output)
        transport.get(_join(wd, "model.engine"), engine_path)
        if timing_cache and transport.exists(_join(wd, "timing.cache")):
            transport.get(_join(wd, "timing.cache"), timing_cache)
        command = transport.describe(argv, wd)
    standin = is_standin_engine(engine_path)
    if standin:
        log.warning("%s is a TEST STAND-IN engine (no TensorRT ran)", engine_path)
    inputs: dict[str, str | Path] = {"onnx": source}
    if calibration_cache:
        inputs["calibration_cache"] = calibration_cache
    return write_manifest(
        engine_path,
        stage="build_engine",
        inputs=inputs,
        options={
            "precision": precision,
            "profile": prof,
            "profile_name": profile,
            "image_size": image_size,
            "workspace_mib": workspace,
            "dla_core": spec.get("dla_core"),
            "timing_cache": bool(timing_cache),
            "qdq": bool(qdq_onnx),
            "flags": argv[1:],
        },
        command=argv,
        started=started,
        extra={
            "target": target,
            "transport": transport.name,
            "backend": "trtexec",
            "tensorrt": {"declared": str(spec["tensorrt"]), "probed": probed["tensorrt"]},
            "device": {"declared": spec["device"], "probed": probed["device"]},
            "trt_generation": gen.major,
            "onnx_sha256": sha256_path(source),
            "io": {"input": io},
            "build_seconds": round(build_seconds, 3),
            "work_dir_command": command,
            "standin": standin,
        },
        manifest_path=manifest_path,
    )


def _check_rtx_sources(
    target: str, precision: str, qdq_onnx: str | Path | None, fp16_onnx: str | Path | None
) -> None:
    """TensorRT-RTX is strongly typed: each precision is an ONNX of that precision."""
    if precision == "best":
        raise TrtflowError(
            f"target {target!r} (TensorRT-RTX) cannot build precision best: networks are "
            "strongly typed, precision comes from the ONNX",
            f"use fp32, fp16 and int8 in targets.{target}.precisions",
        )
    if precision == "fp16" and not fp16_onnx:
        raise TrtflowError(
            f"fp16 engine on TensorRT-RTX target {target!r} needs an fp16 ONNX (no fp16 flag)",
            "pass the fp16 ONNX (the workflow makes results/fp16/{model}/{imgsz}/model.onnx)",
        )
    if precision != "int8" and qdq_onnx:
        raise TrtflowError(
            f"a Q/DQ ONNX was given for a {precision} engine on target {target!r}",
            "give the Q/DQ ONNX to int8 engines only",
        )


def _build_python(
    source: Path,
    engine_path: str | Path,
    target: str,
    spec: dict[str, Any],
    precision: str,
    prof: dict[str, int],
    io: dict[str, Any],
    workspace: int,
    timing_cache: str | Path | None,
    calibration_cache: str | Path | None,
    manifest_path: str | Path | None,
    started: float,
    profile: str,
    image_size: int,
    command: list[str],
) -> dict[str, Any]:
    backend = backend_of(spec)
    if spec.get("transport", "local") != "local":
        raise TrtflowError(
            f"target {target!r}: backend {backend} runs on this host only",
            f"use backend: trtexec for SSH targets (targets.{target}.backend) — the device "
            "then needs no Python",
        )
    from trtflow.trt_python import build_engine_python

    caps = [str(c) for c in spec.get("compute_capabilities", [])]
    with target_lock(target):
        info = build_engine_python(
            source,
            engine_path,
            precision=precision,
            input_name=io["name"],
            input_shape=io["shape"],
            profile=prof,
            workspace_mib=workspace,
            timing_cache=timing_cache,
            calibration_cache=calibration_cache,
            library=PYTHON_BACKENDS[backend],
            compute_capabilities=caps,
        )
    declared = str(spec["tensorrt"])
    if not same_version(declared, info["tensorrt"]):
        Path(engine_path).unlink(missing_ok=True)
        raise TrtflowError(
            f"target {target!r} declares {info['library']} {declared}, the Python bindings "
            f"are {info['tensorrt']}",
            f'set targets.{target}.tensorrt: "{info["tensorrt"]}"',
        )
    size = Path(engine_path).stat().st_size
    log.info(
        "built %s (%s %s, %s, %s): %.1f MB in %.2f s",
        engine_path,
        info["library"],
        info["tensorrt"],
        precision,
        profile,
        size / 1e6,
        info["build_seconds"],
    )
    return write_manifest(
        engine_path,
        stage="build_engine",
        inputs={"onnx": source},
        options={
            "precision": precision,
            "profile": prof,
            "profile_name": profile,
            "image_size": image_size,
            "workspace_mib": workspace,
        },
        command=command,
        started=started,
        extra={
            "target": target,
            "transport": "local",
            "backend": backend,
            "library": info["library"],
            "tensorrt": {"declared": declared, "probed": info["tensorrt"]},
            "device": {"declared": spec["device"], "probed": info.get("device")},
            "compute_capabilities": caps if backend == "tensorrt-rtx" else None,
            "ahead_of_time": backend == "tensorrt-rtx",
            "onnx_sha256": sha256_path(source),
            "io": {"input": io},
            "build_seconds": info["build_seconds"],
            "engine_bytes": size,
            "standin": False,
        },
        manifest_path=manifest_path,
    )


# ---------------------------------------------------------------- benchmark


def benchmark_engine(
    engine_path: str | Path,
    engine_manifest: str | Path,
    out_json: str | Path,
    *,
    target: str,
    spec: dict[str, Any],
    warmup_ms: int = 200,
    iterations: int = 100,
    duration_s: int = 0,
    use_cuda_graph: bool = False,
    no_data_transfers: bool = False,
    profile_layers: bool = True,
) -> dict[str, Any]:
    """Time an engine on its target (batch = the profile's opt batch); GPU compute and host
    latency separately, p50/p90/p99, throughput — parsed from trtexec's JSON exports."""
    started = time.time()
    man = read_json(engine_manifest)
    prof = man["options"]["profile"]
    batch = int(prof["opt"])
    io = man["io"]["input"]
    standin = is_standin_engine(engine_path)
    _check_target_available(target, spec)
    if backend_of(spec) in PYTHON_BACKENDS:
        from trtflow.trt_python import benchmark_engine_python

        if spec.get("transport", "local") != "local":
            raise TrtflowError(
                f"target {target!r}: backend {backend_of(spec)} runs on this host only",
                f"use backend: trtexec for targets.{target}",
            )
        with target_lock(target):
            summary = benchmark_engine_python(
                engine_path,
                batch=batch,
                warmup_ms=warmup_ms,
                iterations=iterations,
                library=PYTHON_BACKENDS[backend_of(spec)],
            )
        argv: list[str] = ["trtflow", "benchmark-engine", "--engine", str(engine_path)]
        exports: dict[str, Any] = {}
        probed: dict[str, str | None] = {
            "tensorrt": summary.pop("tensorrt", None),
            "device": summary.pop("device", None),
        }
    else:
        argv = trtexec.benchmark_argv(
            str(spec["tensorrt"]),
            trtexec=spec.get("trtexec") or "trtexec",
            engine="model.engine",
            input_name=io["name"],
            input_shape=io["shape"],
            batch=batch,
            times_json="times.json",
            profile_json="profile.json" if profile_layers else None,
            warmup_ms=warmup_ms,
            iterations=iterations,
            duration_s=duration_s,
            use_cuda_graph=use_cuda_graph,
            no_data_transfers=no_data_transfers,
            dla_core=spec.get("dla_core"),
        )
        label = _label(target, "bench", Path(engine_path).stem)
        with tempfile.TemporaryDirectory(prefix="trtflow-bench-") as local:
            with _session(target, spec, label) as (transport, wd):
                transport.put(engine_path, _join(wd, "model.engine"))
                result = transport.run(argv, wd)
                _log_output(result.output)
                _fail_on_device(target, spec, "benchmarking the engine", result)
                probed = _check_probe(target, spec, result.output)
                transport.get(_join(wd, "times.json"), Path(local) / "times.json")
                if profile_layers:
                    transport.get(_join(wd, "profile.json"), Path(local) / "profile.json")
            summary = trtexec.parse_times(Path(local) / "times.json", batch=batch)
            exports = {"times": read_json(Path(local) / "times.json")}
            if profile_layers:
                summary["layers"] = trtexec.parse_profile(Path(local) / "profile.json")
                exports["profile"] = read_json(Path(local) / "profile.json")
    report = {
        "engine": str(engine_path),
        "engine_sha256": sha256_path(engine_path),
        "target": target,
        "tensorrt": str(spec["tensorrt"]),
        "device": spec["device"],
        "probed": probed,
        "precision": man["options"]["precision"],
        "profile": man["options"].get("profile_name"),
        "batch": batch,
        "use_cuda_graph": use_cuda_graph,
        "no_data_transfers": no_data_transfers,
        "warmup_ms": warmup_ms,
        "standin": standin,
        **summary,
        "command": argv,
        "exports": exports,
        "seconds": round(time.time() - started, 3),
    }
    if standin:
        report["note"] = "TEST STAND-IN: no TensorRT ran; these timings are fake"
    gc, hl = summary.get("gpu_compute", {}), summary.get("host_latency", {})
    log.info(
        "%s%s b%d: GPU compute p50 %.3f p99 %.3f ms, host latency p50 %.3f p99 %.3f ms, %.1f img/s",
        "[STAND-IN] " if standin else "",
        engine_path,
        batch,
        gc.get("p50_ms", float("nan")),
        gc.get("p99_ms", float("nan")),
        hl.get("p50_ms", float("nan")),
        hl.get("p99_ms", float("nan")),
        summary.get("throughput_ips", float("nan")),
    )
    write_json(out_json, report)
    return report


# ---------------------------------------------------------------- parity


def make_engine_input(shape: list[int], seed: int = 0) -> np.ndarray:
    """Deterministic float32 images in [0, 1] of the engine input's (concrete) shape."""
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32)


def onnx_reference(onnx_path: str | Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    from trtflow.bench import make_session

    sess = make_session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {name: x}), strict=True))


def check_engine_parity(
    engine_path: str | Path,
    engine_manifest: str | Path,
    onnx_path: str | Path,
    out_json: str | Path,
    *,
    target: str,
    spec: dict[str, Any],
    tolerance: dict[str, dict[str, float]],
    seed: int = 0,
) -> dict[str, Any]:
    """Engine outputs vs ONNX Runtime on the same raw input (trtexec --loadInputs /
    --exportOutput); tolerance per precision. Raises when beyond tolerance."""

    from trtflow.parity import errors

    started = time.time()
    man = read_json(engine_manifest)
    precision = man["options"]["precision"]
    tol = tolerance.get(precision) or {"atol": 1e-3, "rtol": 1e-3}
    io = man["io"]["input"]
    batch = int(man["options"]["profile"]["opt"])
    shape = [
        batch if i == 0 and not (isinstance(d, int) and d > 0) else int(d)
        for i, d in enumerate(io["shape"])
    ]
    x = make_engine_input(shape, seed)
    standin = is_standin_engine(engine_path)
    model = load_onnx(onnx_path, load_external_data=False)
    plugins = sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.domain not in ("", "ai.onnx") or n.op_type.endswith("_TRT")
        }
    )
    report: dict[str, Any] = {
        "engine": str(engine_path),
        "onnx": str(onnx_path),
        "target": target,
        "tensorrt": str(spec["tensorrt"]),
        "device": spec["device"],
        "precision": precision,
        "profile": man["options"].get("profile_name"),
        "batch": batch,
        "seed": seed,
        **tol,
        "standin": standin,
    }
    _check_target_available(target, spec)
    if plugins:
        report.update(ok=None, skipped=f"ONNX Runtime cannot run TensorRT plugins {plugins}")
        log.warning("parity skipped for %s: %s", engine_path, report["skipped"])
        write_json(out_json, report)
        return report
    if backend_of(spec) in PYTHON_BACKENDS:
        from trtflow.trt_python import run_engine_python

        with target_lock(target):
            engine_out = run_engine_python(
                engine_path, {io["name"]: x}, PYTHON_BACKENDS[backend_of(spec)]
            )
        argv: list[str] = ["trtflow", "check-engine-parity", "--engine", str(engine_path)]
    else:
        argv = trtexec.parity_argv(
            str(spec["tensorrt"]),
            trtexec=spec.get("trtexec") or "trtexec",
            engine="model.engine",
            input_name=io["name"],
            input_shape=io["shape"],
            batch=batch,
            input_bin="input.bin",
            output_json="output.json",
            dla_core=spec.get("dla_core"),
        )
        label = _label(target, "parity", Path(engine_path).stem)
        with tempfile.TemporaryDirectory(prefix="trtflow-parity-") as local:
            bin_path = Path(local) / "input.bin"
            bin_path.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
            with _session(target, spec, label) as (transport, wd):
                transport.put(engine_path, _join(wd, "model.engine"))
                transport.put(bin_path, _join(wd, "input.bin"))
                result = transport.run(argv, wd)
                _log_output(result.output)
                _fail_on_device(target, spec, "running the engine on the parity input", result)
                _check_probe(target, spec, result.output)
                transport.get(_join(wd, "output.json"), Path(local) / "output.json")
            engine_out = trtexec.parse_outputs(Path(local) / "output.json")
    reference = onnx_reference(onnx_path, io["name"], x)
    missing = sorted(set(reference) - set(engine_out))
    if missing:
        raise TrtflowError(
            f"engine {engine_path} has no output(s) {missing} (it has {sorted(engine_out)})",
            "rebuild the engine from the same patched ONNX",
        )
    report["outputs"] = {
        name: errors(engine_out[name], ref, tol["atol"], tol["rtol"])
        for name, ref in reference.items()
    }
    report["ok"] = all(e["ok"] for e in report["outputs"].values())
    report["max_abs"] = max(e["max_abs"] for e in report["outputs"].values())
    report["command"] = argv
    report["seconds"] = round(time.time() - started, 3)
    for name, e in report["outputs"].items():
        log.info(
            "%s: max_abs %.3g max_rel %.3g mismatched %d/%d",
            name,
            e["max_abs"],
            e["max_rel"],
            e["mismatched"],
            e["elements"],
        )
    if not report["ok"]:
        name, e = max(report["outputs"].items(), key=lambda kv: kv[1]["mismatched"])
        raise TrtflowError(
            f"engine parity failed for {engine_path} ({precision}): output {name} has "
            f"{e['mismatched']} elements beyond atol {tol['atol']} + rtol {tol['rtol']} "
            f"(max abs {e['max_abs']:.3g})",
            f"inspect the engine, or loosen engine.parity.tolerance.{precision}",
        )
    write_json(out_json, report)
    return report
