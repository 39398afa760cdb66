"""Glue between a stage function and its caller (Snakemake script or CLI).

Sends logging to the job's log file and turns any failure into one clear line (on stderr and in
the log) and a non-zero exit; the log also keeps the full traceback of anything that is not a
TrtflowError, so the cause survives under Slurm or remote storage. This is the only place
allowed to call ``sys.exit``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trtflow.core.errors import DISK_FULL_WORDS, TrtflowError, is_disk_full
from trtflow.core.manifest import artifact_of

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: ``extra=`` of records that go to the log file only (stderr gets them with ``debug``).
FILE_ONLY = {"trtflow_file_only": True}
#: errno -> how to fix it, for OSErrors that reach the runner.
OS_FIXES = {
    errno.ENOSPC: "free disk space there (or move results/ to a larger disk) and rerun",
    errno.EDQUOT: "free disk quota there and rerun",
    errno.EACCES: "make the path writable for this user, or run from a directory you own",
    errno.EROFS: "run from a writable directory",
    errno.ENOTDIR: "a part of the path is a file: move it away so the folder can be made",
    errno.EISDIR: "the path is a directory where a file is expected: point it at the file",
    errno.ENOENT: "check the path (relative paths are from the working directory)",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


def describe_disk_full(exc: BaseException) -> str:
    """The line for a full disk: the artifact being written, how much of it was, and what its
    filesystem has free (``OSError`` ENOSPC/EDQUOT, or TensorFlow's ``ResourceExhaustedError``,
    which names the file in its message only). ``atomic_path`` removed the partial file, so
    the free space is what the artifact had, and it needs more than that."""
    artifact, written = getattr(exc, "trtflow_written", (None, None))
    path = getattr(exc, "filename", None)
    if path is None:
        m = re.search(r"(\S+); (?:" + "|".join(DISK_FULL_WORDS) + ")", str(exc))
        path = m.group(1) if m else None
    where = artifact or (artifact_of(path) if path else None)
    said = next((w for w in DISK_FULL_WORDS if w in str(exc)), exc.__class__.__name__)
    line = f"disk full: writing {where or '(path unknown)'} failed ({said}"
    line += f", after {_mb(written)} of it)" if written else ")"
    probe = Path(where or ".").absolute()
    while not probe.is_dir() and probe != probe.parent:
        probe = probe.parent
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(probe)
        line += f"; the filesystem of {probe} has {_mb(usage.free)} free of {_mb(usage.total)}"
        if written:
            line += ", and it needs more than that"
    quota = said == DISK_FULL_WORDS[1] or getattr(exc, "errno", None) == errno.EDQUOT
    return f"{line} — fix: {OS_FIXES[errno.EDQUOT if quota else errno.ENOSPC]}"


def describe_failure(exc: BaseException) -> str:
    """One line for an exception that is not a TrtflowError: what failed, the path, the fix."""
    if is_disk_full(exc):
        return describe_disk_full(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        fix = OS_FIXES.get(exc.errno, "see the traceback in the job's log")
        return f"{exc.strerror or exc}{where} — fix: {fix}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return (
        f"{type(exc).__name__}: {first} — fix: see the traceback in the job's log; if the input "
        "is valid, report it with that log"
    )


def setup_logging(
    log_file: str | Path | None = None, level: int = logging.INFO, debug: bool = False
) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT))
    if not debug:
        stderr.addFilter(lambda r: not getattr(r, "trtflow_file_only", False))
    root.addHandler(stderr)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(
    func: Callable[[], Any],
    log_file: str | Path | None = None,
    debug: bool = False,
    model: str | None = None,
) -> Any:
    """Run ``func``; on any exception log one line ``ERROR …`` (and, for anything but a
    TrtflowError, the traceback to the log file — to stderr too with ``debug``) and exit 1.

    ``model`` (the job's zoo entry) replaces the ``models.<name>`` of library messages, so the
    fix names the key to edit."""
    setup_logging(log_file, debug=debug)
    log = logging.getLogger("trtflow")
    try:
        return func()
    except TrtflowError as exc:
        log.error("%s", str(exc).replace("models.<name>", f"models.{model}") if model else exc)
        sys.stderr.flush()
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 — the job's log must keep every cause
        log.error("%s", describe_failure(exc))
        log.error("traceback:\n%s", traceback.format_exc().rstrip(), extra=FILE_ONLY)
        sys.stderr.flush()
        sys.exit(1)
