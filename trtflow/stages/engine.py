"""Stages of rules/engine.smk (target hosts): preflight, build_engine, benchmark_engine, parity.

Each stage resolves the target, hands the work to its backend (``trtflow.trt.backends``) and
writes the artifact, its JSON report and manifest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import read_json, sha256_path, write_json, write_manifest
from trtflow.onnx.io import load_onnx
from trtflow.onnx.plugins import plugin_ops
from trtflow.trt import trtexec
from trtflow.trt.backends import (
    _build_python,
    _check_probe,
    _check_rtx_sources,
    _check_target_available,
    _fail_on_device,
    _join,
    _label,
    _log_output,
    _session,
    is_standin_engine,
    make_engine_input,
    onnx_input,
    onnx_reference,
    target_lock,
)
from trtflow.trt.checks import (
    _library,
    check_batch,
    check_int64,
    check_operators,
    check_opset,
    check_parser,
    input_contract,
    ops_table_for,
)
from trtflow.trt.targets import (
    PYTHON_BACKENDS,
    backend_of,
    generation,
    is_rtx,
    parse_profile,
    parse_version,
)

log = logging.getLogger(__name__)


def preflight(
    onnx_path: str | Path,
    out_json: str | Path | None,
    tensorrt: str,
    target: str = "?",
    dynamic: bool = False,
    patches: list[str] | None = None,
    backend: str = "trtexec",
    sources: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Check ``onnx_path`` (and ``sources``: the Q/DQ and fp16 ONNX the target builds too) for a
    TensorRT ``tensorrt`` target; raise on the first error(s).

    ``backend: tensorrt-rtx`` targets (``tensorrt`` is then the TensorRT-RTX version) are
    checked by the real parser alone, which is theirs; other targets get the static tables and,
    where TensorRT-RTX is installed, its parser as well.
    """

    from trtflow.trt import rtx

    started = time.time()
    parse_version(tensorrt)
    is_rtx = backend == "tensorrt-rtx"
    model = load_onnx(onnx_path, load_external_data=False)
    findings = [] if is_rtx else [*check_operators(model, tensorrt), *check_int64(model, tensorrt)]
    findings += check_batch(model, dynamic)
    if not is_rtx:
        findings += check_opset(model, tensorrt)
    parsed = [str(onnx_path), *map(str, sources)]
    if is_rtx or rtx.available():
        findings += check_parser(parsed, plugins_are_errors=is_rtx)
        parser = {"library": f"tensorrt-rtx {rtx.version()}", "files": parsed}
    else:
        log.info("TensorRT-RTX is not installed: no real parser, static tables only")
        parser = None
    errors = [f for f in findings if f.severity == "error"]
    table_version = None if is_rtx else ops_table_for(tensorrt)[0]
    report = {
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_path(onnx_path),
        "target": target,
        "tensorrt": tensorrt,
        "backend": backend,
        "ops_table": table_version,
        "parser": parser,
        "dynamic_profile": dynamic,
        "inputs": input_contract(model),
        "nodes": len(model.graph.node),
        "ok": not errors,
        "findings": [asdict(f) for f in findings],
        "seconds": round(time.time() - started, 3),
    }
    for f in findings:
        (log.error if f.severity == "error" else log.warning)("%s", f.line())
    if errors:
        more = f" (+{len(errors) - 1} more, see the log)" if len(errors) > 1 else ""
        first = errors[0]
        in_recipe = patches is not None and first.patch in patches
        where = first.onnx or onnx_path
        raise TrtflowError(
            f"preflight of {where} for target {target!r} ({_library(backend)} {tensorrt}) "
            f"failed: node {first.node!r} ({first.op}): {first.reason}{more}",
            (
                first.patch
                if first.patch and first.patch.startswith("remove ")
                else f"add patch {first.patch} to models.<name>.patches"
                + (" (it is in the recipe already: check its output)" if in_recipe else "")
                if first.patch
                else "change the export so the graph avoids it"
            ),
        )
    log.info(
        "preflight ok: %d nodes, %d warnings, %s %s (ops table %s, real parser %s)",
        report["nodes"],
        len(findings),
        _library(backend),
        tensorrt,
        table_version,
        parser["library"] if parser else None,
    )
    if out_json:
        write_json(out_json, report)
    return report


# ---------------------------------------------------------------- build


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    target: str,
    spec: dict[str, Any],
    precision: str = "fp16",
    profile: str = "b1",
    image_size: int,
    timing_cache: str | Path | None = None,
    calibration_cache: str | Path | None = None,
    qdq_onnx: str | Path | None = None,
    fp16_onnx: str | Path | None = None,
    manifest_path: str | Path | None = None,
    config: Sequence[str | Path] = ("config.yaml",),
) -> dict[str, Any]:
    """Build one TensorRT engine of ``onnx_path`` on ``target`` and write its manifest.

    int8 (and best) need a calibration cache or a Q/DQ ONNX (then that ONNX is built).
    TensorRT-RTX targets build fp16 from ``fp16_onnx`` (strongly typed: no fp16 flag).
    The timing cache is per target, shared by its builds, updated after each one.
    ``config``: the config file(s) that define ``target`` (for the manifest's command).
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
    reproduce = stage_command(
        "build-engine", onnx_path=onnx_path, engine_path=engine_path, target=target,
        precision=precision, profile=profile, image_size=image_size, timing_cache=timing_cache,
        calibration_cache=calibration_cache, qdq_onnx=qdq_onnx, fp16_onnx=fp16_onnx,
        config=list(config),
    )  # fmt: skip
    if backend_of(spec) in PYTHON_BACKENDS:
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
            reproduce,
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
        command=reproduce,
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
    config: Sequence[str | Path] = ("config.yaml",),
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
        from trtflow.trt.python_api import benchmark_engine_python

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
        argv: list[str] = stage_command(
            "benchmark-engine", engine_path=engine_path, engine_manifest=engine_manifest,
            out_json=out_json, target=target, warmup_ms=warmup_ms, iterations=iterations,
            duration_s=duration_s, use_cuda_graph=use_cuda_graph,
            no_data_transfers=no_data_transfers, profile_layers=profile_layers,
            config=list(config),
        )  # fmt: skip
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
    config: Sequence[str | Path] = ("config.yaml",),
) -> dict[str, Any]:
    """Engine outputs vs ONNX Runtime on the same raw input (trtexec --loadInputs /
    --exportOutput); tolerance per precision. Raises when beyond tolerance."""

    from trtflow.onnx.compare import errors

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
    plugins = plugin_ops(model)
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
        from trtflow.trt.python_api import run_engine_python

        with target_lock(target):
            engine_out = run_engine_python(
                engine_path, {io["name"]: x}, PYTHON_BACKENDS[backend_of(spec)]
            )
        argv: list[str] = stage_command(
            "check-engine-parity", engine_path=engine_path, engine_manifest=engine_manifest,
            onnx_path=onnx_path, out_json=out_json, target=target, seed=seed,
            config=list(config),
        )  # fmt: skip
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
