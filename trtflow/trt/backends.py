"""Engine backends of a target: trtexec, the TensorRT Python API, TensorRT-RTX.

Each backend offers the same three steps on its target — ``build`` (ONNX -> engine),
``benchmark`` (time an engine) and ``run`` (one inference, for parity) — plus the checks the
stages make first (``check_available``, ``source_onnx``, ``preflight``). ``backend_for(target)``
picks the class by the target's ``backend`` name from BACKENDS; the engine stages never branch
on it.

- ``TrtexecBackend``: trtexec on the device, through the target's transport (local or ssh); the
  device needs no Python.
- ``PythonBackend``: the TensorRT Python API through Polygraphy's loaders
  (trtflow.trt.python_api), on this host only.
- ``RtxBackend``: the same for TensorRT-RTX: strongly typed (fp16/INT8 come from the ONNX),
  engines built ahead of time for the target's compute capabilities, its own ONNX parser.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import read_json, sha256_path
from trtflow.onnx.io import input_contract, load_onnx
from trtflow.trt import trtexec
from trtflow.trt.checks import (
    Finding,
    check_batch,
    check_int64,
    check_operators,
    check_opset,
    check_parser,
    ops_table_for,
)
from trtflow.trt.targets import HOW_TO_CONFIGURE, RTX, Target, same_version
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


def onnx_input(onnx_path: str | Path) -> dict[str, Any]:
    """The ONNX's (single) image input: name, shape (symbolic batch as a string), dtype."""
    inputs = input_contract(load_onnx(onnx_path, load_external_data=False))
    if len(inputs) != 1:
        raise TrtflowError(
            f"{onnx_path}: expected one input, found {len(inputs)} "
            f"({', '.join(i['name'] for i in inputs)})",
            "use the patched ONNX (rename_io gives it one 'images' input)",
        )
    return inputs[0]


# ---------------------------------------------------------------- what a backend is given / gives


@dataclass(frozen=True)
class BuildJob:
    """One engine to build, as the build stage resolved it."""

    #: the ONNX that is built (the patched one, its fp16 form or its Q/DQ form)
    source: Path
    engine: Path
    precision: str
    #: the batch profile: its name (b1, b1-4-8) and min/opt/max
    profile_name: str
    profile: dict[str, int]
    image_size: int
    #: the source's image input (onnx_input)
    io: dict[str, Any]
    timing_cache: Path | None = None
    calibration_cache: Path | None = None
    qdq: bool = False


@dataclass(frozen=True)
class Built:
    """What a build gives the engine's manifest (beyond the options every build records)."""

    inputs: dict[str, str | Path]
    options: dict[str, Any]
    extra: dict[str, Any]


@dataclass(frozen=True)
class BenchOptions:
    """How an engine is timed (engine.benchmark in the config)."""

    warmup_ms: int = 200
    iterations: int = 100
    duration_s: int = 0
    use_cuda_graph: bool = False
    no_data_transfers: bool = False
    profile_layers: bool = True


@dataclass(frozen=True)
class Timed:
    """A benchmark: the summary (trtexec.parse_times' keys), what the device reported, the
    command that ran, the raw exports."""

    summary: dict[str, Any]
    probed: dict[str, str | None]
    command: list[str]
    exports: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- backends


class Backend:
    """A target's way of building, timing and running engines (one instance per target)."""

    #: the ``backend`` name of the config
    name: ClassVar[str]
    #: the library, in messages
    library: ClassVar[str] = "TensorRT"
    #: True: runs through the target's transport (local or ssh); False: on this host only
    remote: ClassVar[bool] = False
    #: True: the backend's library is TensorRT-RTX, whose ONNX parser is the target's own
    own_parser: ClassVar[bool] = False

    def __init__(self, target: Target) -> None:
        self.target = target

    # -- checks every stage makes first
    def check_available(self) -> None:
        """Fail early, with one clear message, when the target cannot be driven from here."""
        t = self.target
        if t.is_local:
            self._check_installed()
        elif not self.remote:
            raise TrtflowError(
                f"target {t.name!r}: backend {t.backend} runs on this host only",
                f"use backend: trtexec for SSH targets (targets.{t.name}.backend) — the device "
                "then needs no Python",
            )

    def _check_installed(self) -> None:
        raise NotImplementedError

    def source_onnx(
        self,
        onnx_path: str | Path,
        precision: str,
        qdq_onnx: str | Path | None = None,
        fp16_onnx: str | Path | None = None,
    ) -> Path:
        """The ONNX an engine of ``precision`` is built from: the Q/DQ ONNX when given."""
        return Path(qdq_onnx or onnx_path)

    # -- the three steps
    def build(self, job: BuildJob) -> Built:
        raise NotImplementedError

    def benchmark(
        self,
        engine_path: str | Path,
        *,
        batch: int,
        io: dict[str, Any],
        options: BenchOptions,
        command: list[str],
    ) -> Timed:
        raise NotImplementedError

    def run(
        self,
        engine_path: str | Path,
        x: np.ndarray,
        *,
        batch: int,
        io: dict[str, Any],
        command: list[str],
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """One inference of ``x``: the outputs by name and the command that ran."""
        raise NotImplementedError

    # -- preflight (on the convert host: needs the version only, not the device)
    @classmethod
    def static_checks(cls, model: Any, tensorrt: str, dynamic: bool) -> list[Finding]:
        """What the tables say of ``model`` for TensorRT ``tensorrt`` (operators, INT64,
        batch pinning, opset)."""
        return [
            *check_operators(model, tensorrt),
            *check_int64(model, tensorrt),
            *check_batch(model, dynamic),
            *check_opset(model, tensorrt),
        ]

    @classmethod
    def ops_table(cls, tensorrt: str) -> str | None:
        """The version of the operator table the static checks used."""
        return ops_table_for(tensorrt)[0]

    @classmethod
    def preflight(
        cls, model: Any, files: Sequence[str], tensorrt: str, dynamic: bool
    ) -> tuple[list[Finding], dict[str, Any] | None]:
        """Every finding for ``model`` (``files``: each ONNX the target builds) and the real
        parser that spoke (None where TensorRT-RTX is not installed)."""
        from trtflow.trt import rtx

        findings = cls.static_checks(model, tensorrt, dynamic)
        if not (cls.own_parser or rtx.available()):
            log.info("TensorRT-RTX is not installed: no real parser, static tables only")
            return findings, None
        findings += check_parser(files, plugins_are_errors=cls.own_parser)
        return findings, {"library": f"tensorrt-rtx {rtx.version()}", "files": list(files)}


class TrtexecBackend(Backend):
    """trtexec on the device, through the target's transport; the device needs no Python."""

    name = "trtexec"
    remote = True

    def _check_installed(self) -> None:
        t = self.target
        exe = t.trtexec
        if not (shutil.which(exe) or (os.sep in exe and os.access(exe, os.X_OK))):
            raise TrtflowError(
                f"target {t.name!r}: trtexec ({exe}) is not found on this host — TensorRT is "
                "not installed here",
                HOW_TO_CONFIGURE,
            )

    @contextlib.contextmanager
    def _session(self, label: str) -> Iterator[tuple[Transport, str]]:
        """Lock the target, open a work dir there, always remove it afterwards."""
        transport = make_transport(self.target)
        with target_lock(self.target.name):
            wd = transport.workdir(label)
            log.info("[%s] work dir %s (%s)", self.target.name, wd, transport.name)
            try:
                yield transport, wd
            finally:
                transport.cleanup(wd)

    def _probe(self, output: str) -> dict[str, str | None]:
        """Compare the version/device the device reports with the config's declaration."""
        t = self.target
        probed = trtexec.probe_log(output)
        if probed["tensorrt"] and not same_version(t.tensorrt, probed["tensorrt"]):
            raise TrtflowError(
                f"target {t.name!r} declares TensorRT {t.tensorrt} but its trtexec reports "
                f"{probed['tensorrt']}",
                f'set targets.{t.name}.tensorrt: "{probed["tensorrt"]}" (its engines then rebuild)',
            )
        if probed["device"] and t.device.lower() not in probed["device"].lower():
            log.warning(
                "target %s declares device %r, trtexec reports %r (engines are tied to the GPU: "
                "set targets.%s.device to match)",
                t.name,
                t.device,
                probed["device"],
                t.name,
            )
        return probed

    def _run(self, transport: Transport, argv: list[str], wd: str, what: str) -> str:
        """Run trtexec in ``wd``; its output in the log, the device's words when it fails."""
        result = transport.run(argv, wd)
        for line in result.output.splitlines():
            log.info("| %s", line)
        if result.returncode != 0:
            t, msg = self.target, trtexec.error_lines(result.output)
            if trtexec.is_out_of_memory(result.output):
                raise TrtflowError(
                    f"target {t.name!r}: {what} ran out of device memory: {msg}",
                    f"lower targets.{t.name}.workspace_mib or the profile's max batch, or free "
                    "the device's memory (other processes)",
                )
            raise TrtflowError(
                f"target {t.name!r}: {what} failed (trtexec exit {result.returncode}): {msg}",
                "read the trtexec output in this job's log; run preflight_engine's checks again",
            )
        return result.output

    def build(self, job: BuildJob) -> Built:
        t = self.target
        gen = t.generation
        argv = trtexec.build_argv(
            t.tensorrt,
            trtexec=t.trtexec,
            onnx="model.onnx",
            engine="model.engine",
            precision=job.precision,
            input_name=job.io["name"],
            input_shape=job.io["shape"],
            profile=job.profile,
            workspace_mib=t.workspace_mib,
            timing_cache="timing.cache" if job.timing_cache else None,
            calibration_cache="calib.cache" if job.calibration_cache else None,
            qdq=job.qdq,
            dla_core=t.dla_core,
        )
        label = _label(t.name, job.source.parent.name, job.precision, job.profile_name)
        with self._session(label) as (transport, wd):
            transport.put(job.source, _join(wd, "model.onnx"))
            if job.calibration_cache:
                transport.put(job.calibration_cache, _join(wd, "calib.cache"))
            if job.timing_cache and job.timing_cache.is_file():
                transport.put(job.timing_cache, _join(wd, "timing.cache"))
            t0 = time.time()
            what = f"building the {job.precision} {job.profile_name} engine"
            output = self._run(transport, argv, wd, what)
            build_seconds = time.time() - t0
            probed = self._probe(output)
            transport.get(_join(wd, "model.engine"), job.engine)
            if job.timing_cache and transport.exists(_join(wd, "timing.cache")):
                transport.get(_join(wd, "timing.cache"), job.timing_cache)
            command = transport.describe(argv, wd)
        standin = is_standin_engine(job.engine)
        if standin:
            log.warning("%s is a TEST STAND-IN engine (no TensorRT ran)", job.engine)
        inputs: dict[str, str | Path] = {"onnx": job.source}
        if job.calibration_cache:
            inputs["calibration_cache"] = job.calibration_cache
        return Built(
            inputs=inputs,
            options={
                "dla_core": t.dla_core,
                "timing_cache": bool(job.timing_cache),
                "qdq": job.qdq,
                "flags": argv[1:],
            },
            extra={
                "target": t.name,
                "transport": transport.name,
                "backend": self.name,
                "tensorrt": {"declared": t.tensorrt, "probed": probed["tensorrt"]},
                "device": {"declared": t.device, "probed": probed["device"]},
                "trt_generation": gen.major,
                "onnx_sha256": sha256_path(job.source),
                "io": {"input": job.io},
                "build_seconds": round(build_seconds, 3),
                "work_dir_command": command,
                "standin": standin,
            },
        )

    def benchmark(
        self,
        engine_path: str | Path,
        *,
        batch: int,
        io: dict[str, Any],
        options: BenchOptions,
        command: list[str],
    ) -> Timed:
        t, o = self.target, options
        argv = trtexec.benchmark_argv(
            t.tensorrt,
            trtexec=t.trtexec,
            engine="model.engine",
            input_name=io["name"],
            input_shape=io["shape"],
            batch=batch,
            times_json="times.json",
            profile_json="profile.json" if o.profile_layers else None,
            warmup_ms=o.warmup_ms,
            iterations=o.iterations,
            duration_s=o.duration_s,
            use_cuda_graph=o.use_cuda_graph,
            no_data_transfers=o.no_data_transfers,
            dla_core=t.dla_core,
        )
        label = _label(t.name, "bench", Path(engine_path).stem)
        with tempfile.TemporaryDirectory(prefix="trtflow-bench-") as local:
            with self._session(label) as (transport, wd):
                transport.put(engine_path, _join(wd, "model.engine"))
                output = self._run(transport, argv, wd, "benchmarking the engine")
                probed = self._probe(output)
                transport.get(_join(wd, "times.json"), Path(local) / "times.json")
                if o.profile_layers:
                    transport.get(_join(wd, "profile.json"), Path(local) / "profile.json")
            summary = trtexec.parse_times(Path(local) / "times.json", batch=batch)
            exports = {"times": read_json(Path(local) / "times.json")}
            if o.profile_layers:
                summary["layers"] = trtexec.parse_profile(Path(local) / "profile.json")
                exports["profile"] = read_json(Path(local) / "profile.json")
        return Timed(summary=summary, probed=probed, command=argv, exports=exports)

    def run(
        self,
        engine_path: str | Path,
        x: np.ndarray,
        *,
        batch: int,
        io: dict[str, Any],
        command: list[str],
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        t = self.target
        argv = trtexec.parity_argv(
            t.tensorrt,
            trtexec=t.trtexec,
            engine="model.engine",
            input_name=io["name"],
            input_shape=io["shape"],
            batch=batch,
            input_bin="input.bin",
            output_json="output.json",
            dla_core=t.dla_core,
        )
        label = _label(t.name, "parity", Path(engine_path).stem)
        with tempfile.TemporaryDirectory(prefix="trtflow-parity-") as local:
            bin_path = Path(local) / "input.bin"
            bin_path.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
            with self._session(label) as (transport, wd):
                transport.put(engine_path, _join(wd, "model.engine"))
                transport.put(bin_path, _join(wd, "input.bin"))
                what = "running the engine on the parity input"
                self._probe(self._run(transport, argv, wd, what))
                transport.get(_join(wd, "output.json"), Path(local) / "output.json")
            return trtexec.parse_outputs(Path(local) / "output.json"), argv


class PythonBackend(Backend):
    """The TensorRT Python API through Polygraphy (trtflow.trt.python_api), on this host."""

    name = "python"
    #: the Python module that is driven
    module: ClassVar[str] = "tensorrt"
    #: True: an ahead-of-time build for the target's compute capabilities (no GPU needed)
    ahead_of_time: ClassVar[bool] = False

    def _check_installed(self) -> None:
        from trtflow.trt.python_api import tensorrt_available

        if not tensorrt_available():
            raise TrtflowError(
                f"target {self.target.name!r}: the TensorRT Python bindings are not installed "
                "on this host (TensorRT cannot be installed here)",
                HOW_TO_CONFIGURE,
            )

    def build(self, job: BuildJob) -> Built:
        from trtflow.trt.python_api import build_engine_python

        t = self.target
        with target_lock(t.name):
            info = build_engine_python(
                job.source,
                job.engine,
                precision=job.precision,
                input_name=job.io["name"],
                input_shape=job.io["shape"],
                profile=job.profile,
                workspace_mib=t.workspace_mib,
                timing_cache=job.timing_cache,
                calibration_cache=job.calibration_cache,
                library=self.module,
                compute_capabilities=list(t.compute_capabilities),
            )
        if not same_version(t.tensorrt, info["tensorrt"]):
            job.engine.unlink(missing_ok=True)
            raise TrtflowError(
                f"target {t.name!r} declares {info['library']} {t.tensorrt}, the Python "
                f"bindings are {info['tensorrt']}",
                f'set targets.{t.name}.tensorrt: "{info["tensorrt"]}"',
            )
        size = job.engine.stat().st_size
        log.info(
            "built %s (%s %s, %s, %s): %.1f MB in %.2f s",
            job.engine,
            info["library"],
            info["tensorrt"],
            job.precision,
            job.profile_name,
            size / 1e6,
            info["build_seconds"],
        )
        return Built(
            inputs={"onnx": job.source},
            options={},
            extra={
                "target": t.name,
                "transport": "local",
                "backend": self.name,
                "library": info["library"],
                "tensorrt": {"declared": t.tensorrt, "probed": info["tensorrt"]},
                "device": {"declared": t.device, "probed": info.get("device")},
                "compute_capabilities": list(t.compute_capabilities)
                if self.ahead_of_time
                else None,
                "ahead_of_time": self.ahead_of_time,
                "onnx_sha256": sha256_path(job.source),
                "io": {"input": job.io},
                "build_seconds": info["build_seconds"],
                "engine_bytes": size,
                "standin": False,
            },
        )

    def benchmark(
        self,
        engine_path: str | Path,
        *,
        batch: int,
        io: dict[str, Any],
        options: BenchOptions,
        command: list[str],
    ) -> Timed:
        from trtflow.trt.python_api import benchmark_engine_python

        with target_lock(self.target.name):
            summary = benchmark_engine_python(
                engine_path,
                batch=batch,
                warmup_ms=options.warmup_ms,
                iterations=options.iterations,
                library=self.module,
            )
        probed = {"tensorrt": summary.pop("tensorrt", None), "device": summary.pop("device", None)}
        return Timed(summary=summary, probed=probed, command=command)

    def run(
        self,
        engine_path: str | Path,
        x: np.ndarray,
        *,
        batch: int,
        io: dict[str, Any],
        command: list[str],
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        from trtflow.trt.python_api import run_engine_python

        with target_lock(self.target.name):
            return run_engine_python(engine_path, {io["name"]: x}, self.module), command


class RtxBackend(PythonBackend):
    """TensorRT-RTX through Polygraphy: real engines built ahead of time on any host for the
    target's compute capabilities (no GPU needed), run only on such a GPU. Strongly typed: each
    precision is built from an ONNX of that precision."""

    name = RTX
    module = "tensorrt_rtx"
    library = "TensorRT-RTX"
    ahead_of_time = True
    own_parser = True

    def _check_installed(self) -> None:
        from trtflow.trt import rtx

        if not rtx.available():
            raise TrtflowError(
                f"target {self.target.name!r}: TensorRT-RTX is not installed on this host",
                f"pip install {rtx.REQUIREMENT} (in requirements.txt; no GPU needed to build)",
            )

    def source_onnx(
        self,
        onnx_path: str | Path,
        precision: str,
        qdq_onnx: str | Path | None = None,
        fp16_onnx: str | Path | None = None,
    ) -> Path:
        """The ONNX of that precision: Q/DQ for int8, fp16 for fp16, else the patched one."""
        name = self.target.name
        if precision == "best":
            raise TrtflowError(
                f"target {name!r} (TensorRT-RTX) cannot build precision best: networks are "
                "strongly typed, precision comes from the ONNX",
                f"use fp32, fp16 and int8 in targets.{name}.precisions",
            )
        if precision == "fp16" and not fp16_onnx:
            raise TrtflowError(
                f"fp16 engine on TensorRT-RTX target {name!r} needs an fp16 ONNX (no fp16 flag)",
                "pass the fp16 ONNX (the workflow makes results/fp16/{model}/{imgsz}/model.onnx)",
            )
        if precision != "int8" and qdq_onnx:
            raise TrtflowError(
                f"a Q/DQ ONNX was given for a {precision} engine on target {name!r}",
                "give the Q/DQ ONNX to int8 engines only",
            )
        return Path(qdq_onnx or fp16_onnx or onnx_path)

    @classmethod
    def static_checks(cls, model: Any, tensorrt: str, dynamic: bool) -> list[Finding]:
        """The real parser speaks for TensorRT-RTX: of the tables, only batch pinning."""
        return check_batch(model, dynamic)

    @classmethod
    def ops_table(cls, tensorrt: str) -> str | None:
        return None


#: The backend of each ``backend`` name of the config (schemas/config.schema.yaml's enum).
BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TrtexecBackend, PythonBackend, RtxBackend)
}


def backend_class(name: str) -> type[Backend]:
    """The backend class of a config ``backend`` name, or a clear error."""
    if name not in BACKENDS:
        raise TrtflowError(
            f"unknown backend {name!r}",
            f"use one of: {', '.join(BACKENDS)} (targets.<name>.backend)",
        )
    return BACKENDS[name]


def backend_for(target: Target) -> Backend:
    """The backend that drives ``target``."""
    return backend_class(target.backend)(target)


def _join(wd: str, name: str) -> str:
    return f"{wd.rstrip('/')}/{name}"


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
