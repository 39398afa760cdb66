"""Engine backends of a target (trtexec, TensorRT Python API, TensorRT-RTX): build, time, run."""

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

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import sha256_path, write_manifest
from trtflow.onnx.io import load_onnx
from trtflow.trt import trtexec
from trtflow.trt.targets import (
    HOW_TO_CONFIGURE,
    PYTHON_BACKENDS,
    backend_of,
    is_rtx,
    same_version,
)
from trtflow.trt.transport import Transport, make_transport

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
        from trtflow.trt import rtx

        if not rtx.available():
            raise TrtflowError(
                f"target {target!r}: TensorRT-RTX is not installed on this host",
                f"pip install {rtx.REQUIREMENT} (in requirements.txt; no GPU needed to build)",
            )
        return
    if spec.get("backend", "trtexec") == "python":
        from trtflow.trt.python_api import tensorrt_available

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

    from trtflow.trt.checks import input_contract

    inputs = input_contract(load_onnx(onnx_path, load_external_data=False))
    if len(inputs) != 1:
        raise TrtflowError(
            f"{onnx_path}: expected one input, found {len(inputs)} "
            f"({', '.join(i['name'] for i in inputs)})",
            "use the patched ONNX (rename_io gives it one 'images' input)",
        )
    return inputs[0]


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
    from trtflow.trt.python_api import build_engine_python

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


# ---------------------------------------------------------------- parity


def make_engine_input(shape: list[int], seed: int = 0) -> np.ndarray:
    """Deterministic float32 images in [0, 1] of the engine input's (concrete) shape."""
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32)


def onnx_reference(onnx_path: str | Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    from trtflow.onnx.ort import make_session

    sess = make_session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {name: x}), strict=True))
