"""Artifact manifests and atomic writes.

Every artifact gets ``<artifact>.manifest.json`` next to it: the inputs' sha256, tool versions,
host, options, wall time and the exact command that reproduces it. Artifacts are written to a
temporary name first and renamed into place only when complete, so a failure never leaves a
half-written artifact behind (and never touches an earlier one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from trtflow.core.errors import is_disk_full

log = logging.getLogger(__name__)


TOOLS = (
    "trtflow",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "onnx",
    "onnx-graphsurgeon",
    "polygraphy",
    "onnxruntime",
    "numpy",
    "protobuf",
    "tensorrt-rtx",
    "onnxconverter-common",
)


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names + contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def path_size(path: str | Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def tool_versions(names: Sequence[str] = TOOLS) -> dict[str, str]:
    out = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(final: str | Path) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>`` siblings of ``final`` left by killed jobs (their process is
    gone); a live writer's temp is left alone. Returns what was removed."""
    final = Path(final)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
            removed.append(tmp)
    return removed


def temp_path(final: Path) -> Path:
    """Where ``atomic_path`` writes ``final`` until it is complete: ``.<name>.tmp-<pid>``."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def artifact_of(path: str | Path) -> Path:
    """The artifact a path inside one of ``atomic_path``'s temporaries belongs to (``path``
    itself when it is not inside one): ``r/.model.onnx.tmp-7/x`` -> ``r/model.onnx``."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        m = re.fullmatch(r"\.(.+)\.tmp-\d+", part)
        if m:
            return Path(*parts[:i], m.group(1))
    return Path(path)


@contextlib.contextmanager
def atomic_path(final: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it to ``final`` only if the block succeeds (on any
    failure the temporary is removed; stale ones of killed jobs are removed first)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = temp_path(final)
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"internal error: {tmp} was not written")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        if tmp.exists():
            if is_disk_full(exc):  # the runner's line names the artifact and what it got
                exc.trtflow_written = (final, path_size(tmp))  # type: ignore[attr-defined]
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
        raise


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_manifest(
    artifact: str | Path,
    *,
    stage: str,
    inputs: dict[str, str | Path],
    options: dict[str, Any],
    command: Sequence[str],
    started: float,
    extra: dict[str, Any] | None = None,
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``<artifact>.manifest.json`` (or ``manifest_path``) and return its content."""
    artifact = Path(artifact)
    data: dict[str, Any] = {
        "stage": stage,
        "artifact": str(artifact),
        "sha256": sha256_path(artifact),
        "size_bytes": path_size(artifact),
        "inputs": {k: {"path": str(v), "sha256": sha256_path(v)} for k, v in inputs.items()},
        "options": options,
        "tools": tool_versions(),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "seconds": round(time.time() - started, 3),
        "command": command_line(command),
    }
    if extra:
        data.update(extra)
    write_json(manifest_path or f"{artifact}.manifest.json", data)
    log.info(
        "wrote %s (%d bytes, sha256 %s…) in %.1f s",
        artifact,
        data["size_bytes"],
        data["sha256"][:12],
        data["seconds"],
    )
    return data
