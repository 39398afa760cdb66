"""TensorRT targets: the config's target table and every TensorRT version difference, in one place.

A *target* is a named device with one TensorRT install (``targets.<name>`` in the config). Engines
are tied to the exact GPU and TensorRT version, so every version-dependent trtexec flag, API
generation and plugin availability is looked up here, from small data tables keyed by TensorRT
major version — never by ``if version == ...`` branches spread over the code.

Pure Python (no TensorRT import): safe on any host, including rules/common.smk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trtflow.core.errors import TrtflowError

PRECISIONS = ("fp32", "fp16", "int8", "best")

HOW_TO_CONFIGURE = (
    "configure a target under `targets:` in config.yaml — a local TensorRT install "
    "(transport: local, trtexec: /usr/src/tensorrt/bin/trtexec) or an SSH device "
    "(transport: ssh, host, user; keys come from your ssh config) — see README 'TensorRT targets'"
)


@dataclass(frozen=True)
class TrtGeneration:
    """What differs between TensorRT major versions (trtexec flags, Python API generation)."""

    major: int
    #: trtexec workspace flag, formatted with ``mib``.
    workspace_flag: str
    #: flag that builds without running inference afterwards (None: none exists)
    build_only_flag: str | None
    #: flags passed on every ONNX build (explicit batch was opt-in until 10 removed the flag)
    onnx_build_flags: tuple[str, ...]
    #: trtexec flags that do not exist in this generation (real trtexec rejects them)
    removed_flags: tuple[str, ...]
    #: Python API: "bindings" (get_binding_*, execute_async_v2) or "tensors" (named I/O, v3)
    python_api: str
    #: how trtexec prints its version in "[TensorRT vNNNN]": (major, minor, patch) -> int
    version_tag_scale: tuple[int, int, int]
    #: --exportProfile has "medianMs" (added in 8.4)
    profile_has_median: bool
    #: INT64 tensors are native (10.x); before, the parser casts INT64 down to INT32
    native_int64: bool


# One row per TensorRT major version trtflow knows how to drive. Sources: `trtexec --help` of
# TensorRT 8.2 and 10.x and the TensorRT 10.0 release notes (removed: --workspace → --memPoolSize,
# --explicitBatch, --buildOnly → --skipInference, --nvtxMode → --profilingVerbosity, and the
# Caffe/UFF front ends --deploy/--uff/--model/--output/--uffInput, implicit --batch/--maxBatch).
GENERATIONS: dict[int, TrtGeneration] = {
    8: TrtGeneration(
        major=8,
        workspace_flag="--workspace={mib}",
        build_only_flag="--buildOnly",
        onnx_build_flags=("--explicitBatch",),
        removed_flags=("--memPoolSize", "--skipInference", "--stronglyTyped"),
        python_api="bindings",
        version_tag_scale=(1000, 100, 1),
        profile_has_median=False,
        native_int64=False,
    ),
    10: TrtGeneration(
        major=10,
        workspace_flag="--memPoolSize=workspace:{mib}M",
        build_only_flag="--skipInference",
        onnx_build_flags=(),
        removed_flags=(
            "--workspace",
            "--explicitBatch",
            "--buildOnly",
            "--nvtxMode",
            "--deploy",
            "--uff",
            "--model",
            "--output",
            "--uffInput",
            "--uffNHWC",
            "--batch",
            "--maxBatch",
        ),
        python_api="tensors",
        version_tag_scale=(10000, 100, 1),
        profile_has_median=True,
        native_int64=True,
    ),
}

# TensorRT plugins a patch may insert, and the first TensorRT version that ships them.
PLUGINS_SINCE: dict[str, tuple[int, ...]] = {
    "EfficientNMS_TRT": (8, 0, 1),
    "EfficientNMS_ONNX_TRT": (8, 2, 0),
    "BatchedNMS_TRT": (7, 0, 0),
    "BatchedNMSDynamic_TRT": (7, 1, 0),
}

# Which patch of trtflow.onnx.patches inserts / fixes what (for preflight messages).
PLUGIN_PATCH: dict[str, str] = {"EfficientNMS_TRT": "efficient_nms"}

_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+){0,2}$")

# ---------------------------------------------------------------- backends
#: Backends that drive TensorRT through its Python API (Polygraphy) on this host: the module.
PYTHON_BACKENDS: dict[str, str] = {"python": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
#: TensorRT-RTX: real parser and ahead-of-time builder on any host; runs on RTX-class GPUs.
RTX = "tensorrt-rtx"


def backend_of(spec: dict[str, Any]) -> str:
    return str(spec.get("backend", "trtexec"))


def is_rtx(spec: dict[str, Any]) -> bool:
    return backend_of(spec) == RTX


def builds_qdq(spec: dict[str, Any]) -> bool:
    """int8 engines from the Q/DQ ONNX (TensorRT >= 10, TensorRT-RTX); else a calibration cache."""
    return is_rtx(spec) or parse_version(str(spec["tensorrt"]))[0] >= 10


def builds_fp16_onnx(spec: dict[str, Any]) -> bool:
    """fp16 engines from an fp16 ONNX: TensorRT-RTX is strongly typed (no fp16 builder flag)."""
    return is_rtx(spec)


def local_compute_capabilities() -> frozenset[str]:
    """Compute capabilities of this host's NVIDIA GPUs ("8.6", ...), from nvidia-smi.

    No GPU library is imported (safe in rules/common.smk); no nvidia-smi means no GPU.
    """
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return frozenset()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(
        line.strip() for line in out.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())
    )


def runs_here(spec: dict[str, Any], local_caps: frozenset[str]) -> bool:
    """Whether this target's engines can be run (benchmark, parity) from this host.

    A TensorRT-RTX target builds ahead of time anywhere; its engines run only on a GPU of one
    of its compute capabilities. Other targets run on their device (local or ssh), as before.
    """
    if not is_rtx(spec):
        return True
    return bool(local_caps & {str(c) for c in spec.get("compute_capabilities", [])})


#: What the summary says of a built TensorRT-RTX engine this host cannot run.
NOT_RUN_HERE = "built, not run: no supported GPU here"


def parse_version(version: str) -> tuple[int, ...]:
    """'8.2.1' -> (8, 2, 1); '10.3' -> (10, 3)."""
    if not _VERSION_RE.match(str(version)):
        raise TrtflowError(
            f"TensorRT version {version!r} is not of the form MAJOR.MINOR[.PATCH]",
            'write it as on the device, e.g. tensorrt: "8.2.1" (quote it in YAML)',
        )
    return tuple(int(p) for p in str(version).split("."))


def generation(version: str, target: str = "?") -> TrtGeneration:
    """The row of GENERATIONS for a TensorRT version, or a clear error."""
    major = parse_version(version)[0]
    if major not in GENERATIONS:
        raise TrtflowError(
            f"target {target!r}: TensorRT {version} (major {major}) is not in trtflow's "
            f"version table (known majors: {', '.join(map(str, GENERATIONS))})",
            "use a device with TensorRT 8.x or 10.x, or add a row to trt.targets.GENERATIONS",
        )
    return GENERATIONS[major]


def version_tag(version: str) -> str:
    """How trtexec prints a version in its banner: 8.2.1 -> 'v8201', 10.3.0 -> 'v100300'."""
    parts = (*parse_version(version), 0, 0)[:3]
    scale = generation(version).version_tag_scale
    return "v" + str(sum(p * s for p, s in zip(parts, scale, strict=True)))


def version_from_tag(tag: str) -> str:
    """Inverse of version_tag: 'v8201' -> '8.2.1', 'v100300' -> '10.3.0'."""
    n = int(tag.lstrip("v"))
    if n >= 100000:  # 10.x and later: MMmmpp
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def same_version(declared: str, probed: str) -> bool:
    """A declared '10.3' matches a probed '10.3.0'; '8.2.1' must match '8.2.1' exactly."""
    d, p = parse_version(declared), parse_version(probed)
    return p[: len(d)] == d


def plugin_available(plugin: str, version: str) -> bool | None:
    """True/False if we know when the plugin shipped, None if it is not one we know."""
    since = PLUGINS_SINCE.get(plugin)
    if since is None:
        return None
    return (*parse_version(version), 0, 0)[:3] >= since


def target_spec(targets: dict[str, Any], name: str) -> dict[str, Any]:
    """Look a target up by name, with one clear message when it is not configured."""
    if not targets:
        raise TrtflowError("no TensorRT target is configured", HOW_TO_CONFIGURE)
    if name not in targets:
        raise TrtflowError(
            f"unknown target {name!r} (configured: {', '.join(sorted(targets))})",
            HOW_TO_CONFIGURE,
        )
    spec: dict[str, Any] = targets[name]
    return spec


def build_relevant(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a target that changes the engine it builds (the rule's rerun params).

    How the device is reached (host, user, port, workdir, trtexec path, ssh config) is left
    out on purpose: moving a device to a new address must not rebuild its engines.
    """
    relevant = {
        "tensorrt": str(spec["tensorrt"]),
        "device": spec["device"],
        "backend": spec.get("backend", "trtexec"),
        "workspace_mib": spec.get("workspace_mib", 1024),
        "dla_core": spec.get("dla_core"),
    }
    if is_rtx(spec):  # the architectures an ahead-of-time build targets
        relevant["compute_capabilities"] = [str(c) for c in spec.get("compute_capabilities", [])]
    return relevant


def parse_profile(profile: str) -> dict[str, int]:
    """'b4' -> static batch 4; 'b1-4-8' -> min 1, opt 4, max 8."""
    m = re.fullmatch(r"b(\d+)(?:-(\d+)-(\d+))?", profile)
    if not m:
        raise TrtflowError(
            f"batch profile {profile!r} is not b<N> or b<min>-<opt>-<max>",
            "use e.g. b1 (static) or b1-4-8 (dynamic)",
        )
    lo = int(m.group(1))
    opt = int(m.group(2) or lo)
    hi = int(m.group(3) or lo)
    if not 1 <= lo <= opt <= hi:
        raise TrtflowError(
            f"batch profile {profile!r}: need 1 <= min <= opt <= max",
            "fix engine.dynamic_profiles",
        )
    return {"min": lo, "opt": opt, "max": hi}


def profile_name(min_: int, opt: int, max_: int) -> str:
    return f"b{min_}" if min_ == opt == max_ else f"b{min_}-{opt}-{max_}"


def is_dynamic(profile: dict[str, int]) -> bool:
    return not profile["min"] == profile["opt"] == profile["max"]
