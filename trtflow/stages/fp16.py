"""Stage "fp16" (convert host): the patched fp32 ONNX as an fp16 ONNX, for strongly typed builders.

TensorRT-RTX has no fp16 builder flag: a network runs in the precision its ONNX declares, so an
fp16 engine is built from an fp16 ONNX. The converter is onnxconverter-common's
``float16.convert_float_to_float16`` (Microsoft's ONNX converter toolkit, maintained with
onnxmltools; the function Polygraphy's ``convert --fp-to-fp16`` calls), with
``keep_io_types=True``: the input and output stay float32 behind Casts, so the engine's I/O
contract, the parity input and the benchmark feeds are those of the fp32 engine.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, write_manifest
from trtflow.onnx.io import load_onnx

log = logging.getLogger(__name__)


REQUIREMENT = "onnxconverter-common==1.16.0"


def convert_onnx_to_fp16(
    onnx_in: str | Path, onnx_out: str | Path, manifest_path: str | Path | None = None
) -> dict[str, Any]:
    """Convert every float32 tensor of ``onnx_in`` to float16 (I/O stay float32)."""
    import onnx

    from trtflow.onnx.io import io_contract

    started = time.time()
    if not Path(onnx_in).is_file():
        raise TrtflowError(f"{onnx_in}: ONNX file not found", "run patch_onnx first")
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise TrtflowError(
            "onnxconverter-common is not installed (the fp16 ONNX converter)",
            f"pip install {REQUIREMENT} (it is in requirements.txt)",
        ) from exc
    model = load_onnx(onnx_in)
    with warnings.catch_warnings(record=True) as caught:  # one warning per clipped weight
        warnings.simplefilter("always")
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    clipped = sum("truncated" in str(w.message) for w in caught)
    if clipped:
        log.info("fp16: %d float32 values outside fp16's range clipped (e.g. %s)", clipped,
                 next(str(w.message) for w in caught if "truncated" in str(w.message)))  # fmt: skip
    onnx.checker.check_model(half)
    casts = sum(n.op_type == "Cast" for n in half.graph.node) - sum(
        n.op_type == "Cast" for n in model.graph.node
    )
    log.info("fp16: %d -> %d nodes (%d Casts added)", len(model.graph.node), len(half.graph.node),
             casts)  # fmt: skip
    with atomic_path(Path(onnx_out)) as tmp:
        onnx.save(half, str(tmp))
    contract = io_contract(half)
    for t in contract:
        log.info("%s %s %s %s", t["kind"], t["name"], t["shape"], t["dtype"])
    import onnxconverter_common

    return write_manifest(
        onnx_out,
        stage="convert_onnx_to_fp16",
        inputs={"onnx": onnx_in},
        options={"keep_io_types": True},
        command=stage_command("fp16", onnx_in=onnx_in, onnx_out=onnx_out),
        started=started,
        extra={
            "converter": f"onnxconverter-common {onnxconverter_common.__version__}",
            "nodes": len(half.graph.node),
            "casts_added": casts,
            "values_clipped": clipped,
            "io": contract,
        },
        manifest_path=manifest_path,
    )
