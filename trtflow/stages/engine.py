"""Stages of rules/engine.smk (target hosts): preflight, build_engine, benchmark_engine, parity.

Each stage resolves the target, hands the work to its backend (``trtflow.trt.backends``) and
writes the artifact, its JSON report and manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trtflow.core.commands import report_command, stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import read_json, sha256_path, write_json, write_manifest
from trtflow.onnx.io import input_contract, load_onnx
from trtflow.onnx.plugins import plugin_ops
from trtflow.trt.backends import (
    BenchOptions,
    BuildJob,
    backend_class,
    backend_for,
    is_standin_engine,
    make_engine_input,
    onnx_input,
    onnx_reference,
)
from trtflow.trt.targets import Target, parse_profile, parse_version

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
    arguments = dict(locals())  # for the report's command
    started = time.time()
    parse_version(tensorrt)
    kind = backend_class(backend)
    model = load_onnx(onnx_path, load_external_data=False)
    findings, parser = kind.preflight(
        model, [str(onnx_path), *map(str, sources)], tensorrt, dynamic
    )
    errors = [f for f in findings if f.severity == "error"]
    table_version = kind.ops_table(tensorrt)
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
        "command": report_command("preflight", arguments) if out_json else None,
    }
    for f in findings:
        (log.error if f.severity == "error" else log.warning)("%s", f.line())
    if errors:
        more = f" (+{len(errors) - 1} more, see the log)" if len(errors) > 1 else ""
        first = errors[0]
        in_recipe = patches is not None and first.patch in patches
        where = first.onnx or onnx_path
        raise TrtflowError(
            f"preflight of {where} for target {target!r} ({kind.library} {tensorrt}) "
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
        kind.library,
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
    ``config``: the config file(s) that define ``target``, then any ``KEY=VALUE`` overrides
    (Snakemake's ``--config``; VALUE JSON) — for the manifest's command.
    """
    started = time.time()
    t = Target.of(target, spec)
    backend = backend_for(t)
    if precision not in t.precisions:
        raise TrtflowError(
            f"target {target!r} does not support precision {precision} "
            f"(it supports {', '.join(t.precisions)})",
            f"remove it from targets.{target}.precisions or from precisions",
        )
    if precision == "int8" and not (calibration_cache or qdq_onnx):
        raise TrtflowError(
            f"int8 engine of {onnx_path} on target {target!r} needs a calibration cache or a "
            "Q/DQ ONNX, and neither was given",
            "set engine.int8.<model>.calibration_cache or .qdq_onnx (the INT8 stage produces "
            "them), or drop int8 from precisions",
        )
    source = backend.source_onnx(onnx_path, precision, qdq_onnx=qdq_onnx, fp16_onnx=fp16_onnx)
    prof = parse_profile(profile)
    io = onnx_input(source)
    backend.check_available()
    reproduce = stage_command(
        "build-engine", onnx_path=onnx_path, engine_path=engine_path, target=target,
        precision=precision, profile=profile, image_size=image_size, timing_cache=timing_cache,
        calibration_cache=calibration_cache, qdq_onnx=qdq_onnx, fp16_onnx=fp16_onnx,
        config=list(config),
    )  # fmt: skip
    built = backend.build(
        BuildJob(
            source=source,
            engine=Path(engine_path),
            precision=precision,
            profile_name=profile,
            profile=prof,
            image_size=image_size,
            io=io,
            timing_cache=Path(timing_cache) if timing_cache else None,
            calibration_cache=Path(calibration_cache) if calibration_cache else None,
            qdq=bool(qdq_onnx),
        )
    )
    return write_manifest(
        engine_path,
        stage="build_engine",
        inputs=built.inputs,
        options={
            "precision": precision,
            "profile": prof,
            "profile_name": profile,
            "image_size": image_size,
            "workspace_mib": t.workspace_mib,
            **built.options,
        },
        command=reproduce,
        started=started,
        extra=built.extra,
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
    t = Target.of(target, spec)
    backend = backend_for(t)
    backend.check_available()
    argv: list[str] = stage_command(
        "benchmark-engine", engine_path=engine_path, engine_manifest=engine_manifest,
        out_json=out_json, target=target, warmup_ms=warmup_ms, iterations=iterations,
        duration_s=duration_s, use_cuda_graph=use_cuda_graph,
        no_data_transfers=no_data_transfers, profile_layers=profile_layers,
        config=list(config),
    )  # fmt: skip
    options = BenchOptions(
        warmup_ms=warmup_ms,
        iterations=iterations,
        duration_s=duration_s,
        use_cuda_graph=use_cuda_graph,
        no_data_transfers=no_data_transfers,
        profile_layers=profile_layers,
    )
    timed = backend.benchmark(engine_path, batch=batch, io=io, options=options, command=argv)
    summary = timed.summary
    report = {
        "engine": str(engine_path),
        "engine_sha256": sha256_path(engine_path),
        "target": target,
        "tensorrt": t.tensorrt,
        "device": t.device,
        "probed": timed.probed,
        "precision": man["options"]["precision"],
        "profile": man["options"].get("profile_name"),
        "batch": batch,
        "use_cuda_graph": use_cuda_graph,
        "no_data_transfers": no_data_transfers,
        "warmup_ms": warmup_ms,
        "standin": standin,
        **summary,
        "command": timed.command,
        "exports": timed.exports,
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
    t = Target.of(target, spec)
    backend = backend_for(t)
    report: dict[str, Any] = {
        "engine": str(engine_path),
        "onnx": str(onnx_path),
        "target": target,
        "tensorrt": t.tensorrt,
        "device": t.device,
        "precision": precision,
        "profile": man["options"].get("profile_name"),
        "batch": batch,
        "seed": seed,
        **tol,
        "standin": standin,
    }
    backend.check_available()
    if plugins:
        report.update(ok=None, skipped=f"ONNX Runtime cannot run TensorRT plugins {plugins}")
        log.warning("parity skipped for %s: %s", engine_path, report["skipped"])
        write_json(out_json, report)
        return report
    argv: list[str] = stage_command(
        "check-engine-parity", engine_path=engine_path, engine_manifest=engine_manifest,
        onnx_path=onnx_path, out_json=out_json, target=target, seed=seed,
        config=list(config),
    )  # fmt: skip
    engine_out, argv = backend.run(engine_path, x, batch=batch, io=io, command=argv)
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
