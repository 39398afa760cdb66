"""Glue between a stage function and its caller (Snakemake script or CLI).

Sends logging to the job's log file and turns a TrtflowError into one clear line and a non-zero
exit. This is the only place allowed to call ``sys.exit``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trtflow.errors import TrtflowError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(func: Callable[[], Any], log_file: str | Path | None = None) -> Any:
    """Run ``func``; on TrtflowError log one line ``ERROR: …`` and exit 1."""
    setup_logging(log_file)
    try:
        return func()
    except TrtflowError as exc:
        logging.getLogger("trtflow").error("%s", exc)
        sys.stderr.flush()
        sys.exit(1)
