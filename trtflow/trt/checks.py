"""Checks of a patched ONNX against a target's TensorRT on the CPU host: ops, INT64, parser, batch.

Run before anything is shipped to a device: an engine build that fails after an hour of
copying and tactic timing on a Jetson is the expensive way to learn that an operator is
missing. Every failing check names the node, the reason and the patch (trtflow.onnx.patches) that
fixes it.

- The real parser: where TensorRT-RTX is installed (it is in the pinned stack), every ONNX the
  target's engines are built from (patched, Q/DQ, fp16) is parsed by its ONNX parser — TensorRT
  10's — and each node it rejects is reported with the parser's message verbatim and, from
  PARSER_FIXES, the patch that fixes it. Tables of operator names cannot see attribute
  constraints (tf2onnx's nearest Resize passed them and every real parser rejected it).
- Static tables, for what that parser cannot speak for: the operators of older parsers
  (trtflow/data/onnx_trt_ops_<version>.txt, from onnx-tensorrt's published support tables;
  their headers say where each came from), TensorRT 8.x's INT64 casts and opset ceiling, and
  the plugins 8.x/10.x ship (TensorRT-RTX ships none, so its parser rejects every plugin node:
  on other targets those nodes are left to the plugin table).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from trtflow.onnx.io import input_contract
from trtflow.trt.targets import (
    PLUGIN_PATCH,
    PLUGINS_SINCE,
    nearest_generation,
    opset_ceiling,
    parse_version,
    plugin_available,
)

log = logging.getLogger(__name__)


DATA = Path(__file__).resolve().parents[1] / "data"
# Inputs where an INT64 value beyond INT32 is harmless once clamped ("to the end" sentinels).
_CLAMP_SAFE = {("Slice", 1), ("Slice", 2)}


@dataclass
class Finding:
    severity: str  # "error" or "warning"
    check: str
    node: str
    op: str
    reason: str
    patch: str | None  # the trtflow.onnx.patches patch that fixes it
    onnx: str | None = None  # the file, for findings of the real parser

    def line(self) -> str:
        fix = f" — fix: add patch {self.patch}" if self.patch else ""
        if self.patch and self.patch.startswith("remove "):
            fix = f" — fix: {self.patch}"
        return f"node {self.node!r} ({self.op}): {self.reason}{fix}"


@cache
def ops_tables() -> dict[tuple[int, ...], frozenset[str]]:
    """{version: operators} from trtflow/data/onnx_trt_ops_<version>.txt."""
    out = {}
    for f in sorted(DATA.glob("onnx_trt_ops_*.txt")):
        version = tuple(int(p) for p in f.stem.removeprefix("onnx_trt_ops_").split("."))
        ops = {ln.split("#")[0].strip() for ln in f.read_text(encoding="utf-8").splitlines()}
        out[version] = frozenset(o for o in ops if o)
    return out


def ops_table_for(version: str) -> tuple[str | None, frozenset[str] | None]:
    """The newest operator table whose version is <= ``version`` (None if none is)."""
    v = parse_version(version)
    best = None
    for tv in sorted(ops_tables()):
        if tv <= v:
            best = tv
    if best is None:
        return None, None
    return ".".join(map(str, best)), ops_tables()[best]


def _initializers(model: Any) -> dict[str, Any]:
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:  # Constant nodes count as initializers for the parser
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = node.attribute[0].t
    return inits


def check_operators(model: Any, version: str) -> list[Finding]:
    table_version, ops = ops_table_for(version)
    findings = []
    for node in model.graph.node:
        op = node.op_type
        name = node.name or f"<{op} -> {node.output[0] if node.output else '?'}>"
        if op in PLUGINS_SINCE or node.domain not in ("", "ai.onnx"):
            ok = plugin_available(op, version)
            if ok is None:
                findings.append(
                    Finding(
                        "error",
                        "plugin",
                        name,
                        op,
                        f"custom op {op} (domain {node.domain!r}) is neither an ONNX operator "
                        f"nor a plugin that ships with TensorRT {version}",
                        None,
                    )
                )
            elif not ok:
                since = ".".join(map(str, PLUGINS_SINCE[op]))
                patch = PLUGIN_PATCH.get(op)
                findings.append(
                    Finding(
                        "error",
                        "plugin",
                        name,
                        op,
                        f"plugin {op} ships with TensorRT >= {since}, the target has {version}",
                        f"remove patch {patch} from models.<name>.patches" if patch else None,
                    )
                )
            continue
        if ops is not None and op not in ops:
            findings.append(
                Finding(
                    "error",
                    "operator",
                    name,
                    op,
                    f"{op} is not supported by the ONNX parser of TensorRT {version} "
                    f"(onnx-tensorrt support table {table_version})",
                    "sanitize",
                )
            )
    if ops is None:
        log.warning(
            "no operator table for TensorRT %s (tables: %s); operators not checked",
            version,
            ", ".join(".".join(map(str, v)) for v in ops_tables()),
        )
    return findings


def check_int64(model: Any, version: str) -> list[Finding]:
    """INT64 initializers: native in TensorRT 10; before, the parser casts them to INT32."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    from trtflow.onnx.patches.dtypes import fits_int32

    if nearest_generation(version).native_int64:
        return []
    inits = _initializers(model)
    findings = []
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    for name, t in inits.items():
        if t.data_type != TensorProto.INT64:
            continue
        arr = numpy_helper.to_array(t)
        beyond = not fits_int32(arr)
        users = consumers.get(name, [])
        node = users[0][0] if users else None
        where = node.name or node.op_type if node is not None else name
        op = node.op_type if node is not None else "initializer"
        harmless = all((n.op_type, i) in _CLAMP_SAFE for n, i in users)
        if beyond and not harmless:
            vmax = int(np.abs(arr).max())
            findings.append(
                Finding(
                    "error",
                    "int64",
                    where,
                    op,
                    f"INT64 initializer {name!r} holds {vmax}, beyond INT32; TensorRT {version} "
                    "clamps it to INT32 and the result changes",
                    "int64_to_int32",
                )
            )
        else:
            findings.append(
                Finding(
                    "warning",
                    "int64",
                    where,
                    op,
                    f"INT64 initializer {name!r}: TensorRT {version} casts it down to INT32 "
                    "(a parser warning, harmless here)",
                    "int64_to_int32",
                )
            )
    return findings


# What a real parser's message means for trtflow: (regular expression, the patch that fixes it).
# A "remove ..." entry is the fix itself (a patch that must go, not one to add).
PARSER_FIXES: tuple[tuple[str, str], ...] = (
    (r"tf_half_pixel_for_nn", "nearest_resize"),
    (r"Plugin not found", "remove patch efficient_nms from models.<name>.patches (TensorRT-RTX "
     "ships no plugins)"),
    (r"[Ii]nput .* batch|Reshape.*batch", "fix_batch"),
)  # fmt: skip


# TensorRT-RTX ships no plugins, and implements some ONNX ops (e.g. NonZero) through a plugin that
# TensorRT 10 has: such a message speaks for TensorRT-RTX only.
_PLUGIN = re.compile(r"[Pp]lugin (not found|creator|registry)")


def parser_fix(message: str) -> str | None:
    """The patch that fixes what the parser says, from PARSER_FIXES (None: none known)."""
    return next((fix for pattern, fix in PARSER_FIXES if re.search(pattern, message)), None)


def check_parser(onnx_paths: Sequence[str | Path], plugins_are_errors: bool) -> list[Finding]:
    """Parse each file with TensorRT-RTX's ONNX parser; one error finding per rejected node.

    ``plugins_are_errors`` is True for TensorRT-RTX targets (no plugins); elsewhere a node that
    needs a plugin TensorRT-RTX lacks is the static tables' business (check_operators).
    """
    from trtflow.trt import rtx

    findings = []
    for path in onnx_paths:
        for e in rtx.parse_onnx(path):
            if not plugins_are_errors and (e.op in PLUGINS_SINCE or _PLUGIN.search(e.message)):
                log.info(
                    "parser: node %r (%s) needs a plugin TensorRT-RTX lacks; left to the static "
                    "tables of TensorRT (which ship it or not): %s",
                    e.name,
                    e.op,
                    e.message,
                )
                continue
            findings.append(
                Finding("error", "parser", e.name or "<model>", e.op or "?", e.message,
                        parser_fix(e.message), onnx=str(path))
            )  # fmt: skip
    return findings


def check_batch(model: Any, dynamic: bool) -> list[Finding]:
    """Under a dynamic profile: a fixed input batch, or a Reshape that pins the batch."""
    from onnx import numpy_helper

    if not dynamic:
        return []
    findings = []
    for inp in input_contract(model):
        b = inp["shape"][0] if inp["shape"] else None
        if isinstance(b, int) and b > 0:
            findings.append(
                Finding(
                    "error",
                    "batch",
                    inp["name"],
                    "input",
                    f"input {inp['name']} has a fixed batch {b} but a dynamic batch profile is "
                    "requested",
                    "fix_batch",
                )
            )
    inits = _initializers(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if shape and int(shape[0]) > 0:
            findings.append(
                Finding(
                    "error",
                    "batch",
                    node.name or node.output[0],
                    "Reshape",
                    f"Reshape to constant shape {shape} pins the batch to {shape[0]}; a dynamic "
                    "profile cannot change it",
                    "fix_batch",
                )
            )
    return findings


def check_opset(model: Any, version: str) -> list[Finding]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    ceiling = opset_ceiling(version)
    if opset is not None and opset > ceiling:
        return [
            Finding(
                "warning",
                "opset",
                "<model>",
                "opset",
                f"opset {opset} is above what onnx-tensorrt documents for TensorRT {version} "
                f"({ceiling}); the parser may still accept it",
                None,
            )
        ]
    return []
