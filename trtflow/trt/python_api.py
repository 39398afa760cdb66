"""TensorRT Python-API backends (``backend: python`` and ``backend: tensorrt-rtx`` targets).

Building uses Polygraphy's loaders (NetworkFromOnnxPath → CreateConfig → EngineBytesFromNetwork),
which already bridge TensorRT 8.x, 10.x and TensorRT-RTX: Polygraphy imports ``tensorrt_rtx``
instead of ``tensorrt`` when ``POLYGRAPHY_USE_TENSORRT_RTX=1`` is set before its TensorRT
backend is first imported (``use_library``), so one process drives one of them. The two share
everything but the config: TensorRT-RTX takes ``CreateConfigRTX(compute_capabilities=...)``
(an ahead-of-time build for those GPU architectures, no GPU needed) and no precision flags
(strongly typed: fp16 and INT8 come from the ONNX). Running is written out for both API
generations (TensorRT-RTX has the 10.x one):

- TensorRT 8.x "bindings": ``num_bindings``, ``get_binding_name/dtype/shape``,
  ``binding_is_input``, ``set_binding_shape`` and ``execute_async_v2(bindings, stream)``;
- TensorRT 10.x "named tensors": ``num_io_tensors``, ``get_tensor_name/mode/dtype``,
  ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3(stream)``.

TensorRT is imported lazily (this module imports on any host); type-checked with mypy against
tensorrt-stubs (10.x API); the 8.x calls go through a small Protocol since those stubs no
longer declare them. It cannot run on a host without TensorRT and a GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path

if TYPE_CHECKING:
    import tensorrt as trt_types
log = logging.getLogger(__name__)


class _LegacyEngine(Protocol):
    """The TensorRT 8.x bindings API (removed in 10.x, absent from the 10.x stubs)."""

    num_bindings: int

    def get_binding_name(self, index: int) -> str: ...
    def binding_is_input(self, index: int) -> bool: ...
    def get_binding_dtype(self, index: int) -> Any: ...


class _LegacyContext(Protocol):
    def set_binding_shape(self, index: int, shape: Sequence[int]) -> bool: ...
    def get_binding_shape(self, index: int) -> Sequence[int]: ...
    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool: ...


#: Python module of each library; "tensorrt_rtx" is TensorRT-RTX.
LIBRARIES = ("tensorrt", "tensorrt_rtx")


def use_library(library: str) -> None:
    """Make Polygraphy's TensorRT backend drive ``library`` in this process (before its import)."""
    import os
    import sys

    rtx = library == "tensorrt_rtx"
    os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if rtx else "0"
    from polygraphy import config  # type: ignore[import-untyped, unused-ignore]

    if "polygraphy.backend.trt" in sys.modules and bool(config.USE_TENSORRT_RTX) != rtx:
        raise TrtflowError(
            f"this process already drives {'tensorrt' if rtx else 'tensorrt_rtx'} through "
            f"Polygraphy, it cannot switch to {library}",
            "run one backend per process (each Snakemake job is one)",
        )
    config.USE_TENSORRT_RTX = rtx


def _trt(library: str = "tensorrt") -> Any:
    """The real TensorRT (or TensorRT-RTX) module, or a clear error (stubs are not TensorRT)."""
    if library == "tensorrt_rtx":
        from trtflow.trt import rtx

        return rtx.module()
    try:
        import tensorrt
    except ImportError as exc:
        raise TrtflowError(
            "the TensorRT Python bindings are not installed on this host",
            "install TensorRT (pip install tensorrt on a CUDA host, or JetPack's "
            "python3-libnvinfer) or use a trtexec target",
        ) from exc
    if not hasattr(tensorrt, "Builder"):
        raise TrtflowError(
            "only type stubs of TensorRT are installed here (tensorrt-stubs), not TensorRT",
            "run python-backend targets on a host with TensorRT",
        )
    return tensorrt


def tensorrt_available() -> bool:
    try:
        _trt()
    except TrtflowError:
        return False
    return True


def api_generation(trt_module: Any) -> str:
    """'tensors' (10.x named-tensor API, TensorRT-RTX) or 'bindings' (8.x)."""
    if trt_module.__name__ == "tensorrt_rtx":
        return "tensors"
    major = int(str(trt_module.__version__).split(".")[0])
    return "tensors" if major >= 10 else "bindings"


# ---------------------------------------------------------------- build


def build_engine_python(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str,
    input_name: str,
    input_shape: Sequence[int | str],
    profile: dict[str, int],
    workspace_mib: int,
    timing_cache: str | Path | None = None,
    calibration_cache: str | Path | None = None,
    library: str = "tensorrt",
    compute_capabilities: Sequence[str] = (),
) -> dict[str, Any]:
    """Build with Polygraphy's loaders; returns version/device/build time.

    ``library="tensorrt_rtx"``: an ahead-of-time build for ``compute_capabilities``
    (e.g. ``["8.6", "8.9", "12.0"]``); ``precision`` is then the ONNX's own (no flags) and the
    timing cache is not used (a no-op in TensorRT-RTX >= 1.2).
    """
    use_library(library)
    trt = _trt(library)
    if library == "tensorrt_rtx" and timing_cache:
        log.info(
            "TensorRT-RTX %s: timing cache operations are no-ops (deprecated since 1.2; it "
            "compiles kernels at run time instead): %s not used",
            trt.__version__,
            timing_cache,
        )
        timing_cache = None
    from polygraphy.backend.trt import (  # type: ignore[import-untyped, unused-ignore]
        Calibrator,
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    rest = [int(d) for d in input_shape[1:]]
    dynamic = not (isinstance(input_shape[0], int) and int(input_shape[0]) > 0)
    profiles = None
    if dynamic:
        profiles = [
            Profile().add(
                input_name,
                min=[profile["min"], *rest],
                opt=[profile["opt"], *rest],
                max=[profile["max"], *rest],
            )
        ]
    common: dict[str, Any] = {
        "profiles": profiles,
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: int(workspace_mib) << 20},
        "load_timing_cache": str(timing_cache)
        if timing_cache and Path(timing_cache).is_file()
        else None,
    }
    if library == "tensorrt_rtx":
        from polygraphy.backend.tensorrt_rtx import (  # type: ignore[import-untyped, unused-ignore]
            CreateConfigRTX,
        )

        caps = [tuple(int(p) for p in str(c).split(".")) for c in compute_capabilities]
        if not caps:
            raise TrtflowError(
                "a TensorRT-RTX build needs the compute capabilities it targets",
                'set targets.<name>.compute_capabilities, e.g. ["8.6", "8.9", "12.0"]',
            )
        config = CreateConfigRTX(compute_capabilities=caps, **common)
    else:
        calibrator = None
        if precision in ("int8", "best") and calibration_cache:
            calibrator = Calibrator(data_loader=[], cache=str(calibration_cache))
        config = CreateConfig(
            fp16=precision in ("fp16", "best"),
            int8=precision in ("int8", "best"),
            calibrator=calibrator,
            **common,
        )
    if timing_cache:
        Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    build = EngineBytesFromNetwork(
        NetworkFromOnnxPath(str(onnx_path)),
        config=config,
        save_timing_cache=str(timing_cache) if timing_cache else None,
    )
    data = build()
    seconds = time.time() - t0
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(data))
    return {
        "tensorrt": str(trt.__version__),
        "library": library,
        "device": None if library == "tensorrt_rtx" else _device_name(),
        "build_seconds": round(seconds, 3),
        "api": api_generation(trt),
    }


def _device_name() -> str | None:
    try:
        from polygraphy import cuda  # type: ignore[import-untyped, unused-ignore]

        return (
            str(cuda.wrapper().get_device_name())
            if hasattr(cuda.wrapper(), "get_device_name")
            else None
        )
    except Exception:  # noqa: BLE001 - the name is informative only
        return None


# ---------------------------------------------------------------- run (both API generations)


def _dims(dims: trt_types.Dims) -> list[int]:
    """A TensorRT Dims as a list (Dims is indexable, not iterable, in the 10.x stubs)."""
    return [int(dims[i]) for i in range(len(dims))]


class EngineRunner:
    """Load a serialized engine and run it with device buffers (Polygraphy's CUDA wrapper)."""

    def __init__(self, engine_path: str | Path, library: str = "tensorrt") -> None:
        trt = _trt(library)
        self.trt = trt
        self.api = api_generation(trt)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise TrtflowError(
                f"{engine_path}: TensorRT {trt.__version__} cannot deserialize this engine",
                "rebuild it on this device with this TensorRT version",
            )
        self.engine: trt_types.ICudaEngine = engine
        self.context: trt_types.IExecutionContext = engine.create_execution_context()

    # -- I/O description: (name, is_input, numpy dtype)
    def io(self) -> list[tuple[str, bool, Any]]:
        trt = self.trt
        if self.api == "tensors":
            out = []
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                out.append((name, is_input, trt.nptype(self.engine.get_tensor_dtype(name))))
            return out
        legacy = cast(_LegacyEngine, self.engine)
        return [
            (
                legacy.get_binding_name(i),
                legacy.binding_is_input(i),
                trt.nptype(legacy.get_binding_dtype(i)),
            )
            for i in range(legacy.num_bindings)
        ]

    def set_input_shapes(self, shapes: dict[str, Sequence[int]]) -> dict[str, list[int]]:
        """Set the input shapes; return every tensor's concrete shape."""
        if self.api == "tensors":
            for name, shape in shapes.items():
                self.context.set_input_shape(name, list(shape))
            return {name: _dims(self.context.get_tensor_shape(name)) for name, _, _ in self.io()}
        legacy = cast(_LegacyContext, self.context)
        io = self.io()
        for index, (name, is_input, _) in enumerate(io):
            if is_input and name in shapes:
                legacy.set_binding_shape(index, list(shapes[name]))
        return {name: list(legacy.get_binding_shape(i)) for i, (name, _, _) in enumerate(io)}

    def run(
        self,
        feeds: dict[str, np.ndarray],
        iterations: int = 1,
        warmup: int = 0,
        copy_outputs: bool = True,
    ) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
        """Run ``iterations`` times; returns outputs and per-iteration host-side timings."""
        from polygraphy import cuda  # type: ignore[import-untyped, unused-ignore]

        shapes = self.set_input_shapes({k: v.shape for k, v in feeds.items()})
        io = self.io()
        stream = cuda.Stream()
        buffers = {}
        for name, _, dtype in io:
            buffers[name] = cuda.DeviceArray(shape=tuple(shapes[name]), dtype=dtype)
        if self.api == "tensors":
            for name, buf in buffers.items():
                self.context.set_tensor_address(name, int(buf.ptr))
        host_out = {n: np.empty(shapes[n], dtype=d) for n, is_in, d in io if not is_in}
        timings: list[dict[str, float]] = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            for name, arr in feeds.items():
                buffers[name].copy_from(np.ascontiguousarray(arr), stream=stream)
            stream.synchronize()
            t1 = time.perf_counter()
            self._execute(buffers, io, int(stream.ptr))
            stream.synchronize()
            t2 = time.perf_counter()
            if copy_outputs:
                for name, host in host_out.items():
                    buffers[name].copy_to(host, stream=stream)
                stream.synchronize()
            t3 = time.perf_counter()
            if i >= warmup:
                timings.append(
                    {
                        "h2dMs": (t1 - t0) * 1e3,
                        "computeMs": (t2 - t1) * 1e3,
                        "d2hMs": (t3 - t2) * 1e3,
                        "latencyMs": (t3 - t0) * 1e3,
                    }
                )
        for buf in buffers.values():
            buf.free()
        return host_out, timings

    def _execute(
        self, buffers: dict[str, Any], io: list[tuple[str, bool, Any]], stream_handle: int
    ) -> None:
        if self.api == "tensors":
            ok = self.context.execute_async_v3(stream_handle)
        else:
            legacy = cast(_LegacyContext, self.context)
            ok = legacy.execute_async_v2([int(buffers[n].ptr) for n, _, _ in io], stream_handle)
        if not ok:
            raise TrtflowError("TensorRT execution failed", "see the TensorRT log above")


def benchmark_engine_python(
    engine_path: str | Path,
    *,
    batch: int,
    warmup_ms: int = 200,
    iterations: int = 100,
    library: str = "tensorrt",
) -> dict[str, Any]:
    """Same summary keys as trtflow.trt.trtexec.parse_times (host-side timers around each step)."""
    from trtflow.trt.trtexec import _stats

    runner = EngineRunner(engine_path, library)
    inputs = [(n, d) for n, is_in, d in runner.io() if is_in]
    feeds = {}
    for name, dtype in inputs:
        if runner.api == "tensors":
            shape = _dims(runner.engine.get_tensor_shape(name))
        else:
            shape = list(cast(_LegacyContext, runner.context).get_binding_shape(0))
        shape = [batch if (i == 0 and d < 0) else d for i, d in enumerate(shape)]
        feeds[name] = np.random.default_rng(0).random(shape).astype(dtype)
    warmup = max(1, warmup_ms // 10)
    _, timings = runner.run(feeds, iterations=iterations, warmup=warmup)
    wall = sum(t["latencyMs"] for t in timings)
    qps = len(timings) * 1e3 / wall if wall else 0.0
    return {
        "iterations": len(timings),
        "gpu_compute": _stats([t["computeMs"] for t in timings]),
        "host_latency": _stats([t["latencyMs"] for t in timings]),
        "h2d": _stats([t["h2dMs"] for t in timings]),
        "d2h": _stats([t["d2hMs"] for t in timings]),
        "enqueue": {},
        "wall_ms": wall,
        "throughput_qps": qps,
        "throughput_ips": qps * batch,
        "timer": "host perf_counter around synchronized steps (python backend)",
        "tensorrt": str(runner.trt.__version__),
        "device": _device_name(),
    }


def run_engine_python(
    engine_path: str | Path, feeds: dict[str, np.ndarray], library: str = "tensorrt"
) -> dict[str, np.ndarray]:
    """One inference; outputs by name (for engine parity)."""
    outputs, _ = EngineRunner(engine_path, library).run(feeds, iterations=1)
    return outputs
