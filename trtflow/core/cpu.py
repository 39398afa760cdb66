"""What CPU a timing was measured on: model name and the instruction sets that change the numbers.

Every CPU timing trtflow writes carries ``cpu_info()``: ONNX Runtime picks its kernels by
instruction set (AVX2, AVX-512, VNNI, AMX), so a latency without the CPU beside it cannot be
compared with another.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path
from typing import Any

#: The instruction-set flags (``/proc/cpuinfo`` names) that select ONNX Runtime's x86 kernels.
ISA_FLAGS = (
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)
#: Flags with an int8 dot product that accumulates in int32 (no 16-bit saturation).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_info() -> dict[str, Any]:
    """``{"model", "isa", "int8_dot", "cores"}`` of this machine (Linux ``/proc/cpuinfo``;
    elsewhere the model is ``platform.processor()`` and the flags are unknown)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        model = m.group(1).strip()
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if m:
        flags = set(m.group(1).split())
    isa = [f for f in ISA_FLAGS if f in flags]
    return {
        "model": model,
        "isa": isa,
        "int8_dot": [f for f in INT8_DOT_FLAGS if f in flags],
        "cores": os.cpu_count(),
    }


def cpu_label(info: dict[str, Any] | None = None) -> str:
    """One line for tables and logs: ``AMD EPYC (avx2, fma; no VNNI/AMX)``."""
    info = info or cpu_info()
    wide = [f for f in info["isa"] if f.startswith(("avx512f", "avx2"))]
    dot = ", ".join(info["int8_dot"]) or "no VNNI/AMX"
    return f"{info['model']} ({', '.join(wide) or 'no AVX2'}; {dot})"
