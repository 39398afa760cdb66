"""Stage "convert" (convert host): frozen GraphDef -> ONNX with tf2onnx."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, read_json, write_manifest

log = logging.getLogger(__name__)


MAX_OPSET = 18  # tf2onnx 1.17.0 emits at most opset 18


def check_opset(opset: int) -> None:
    if opset > MAX_OPSET:
        raise TrtflowError(
            f"opset {opset} is not supported: tf2onnx 1.17 emits opset <= {MAX_OPSET} "
            "and TensorRT 8.x parses up to 17",
            "set onnx.opset to 17 (the default) or lower",
        )
    if opset < 11:
        raise TrtflowError(f"opset {opset} is too old for YOLOv5", "use onnx.opset 13..17")


def convert_pb_to_onnx(
    pb: str | Path,
    out_onnx: str | Path,
    input_name: str | None = None,
    output_name: str | None = None,
    opset: int = 17,
    manifest_path: str | Path | None = None,
    pb_manifest: str | Path | None = None,
) -> dict[str, Any]:
    """Convert ``pb`` with tf2onnx (in process) and write ``out_onnx`` plus its manifest.

    Tensor names left out (``input_name``, ``output_name``) are the ones export_pb recorded in
    ``pb_manifest``, else found in the graph.
    """
    check_opset(opset)
    import onnx
    import tf2onnx

    from trtflow.onnx.io import io_contract
    from trtflow.tf import graph as tfgraph

    started = time.time()
    gd = tfgraph.read_graph_def(pb)
    if not (input_name and output_name):
        if pb_manifest and Path(pb_manifest).is_file():
            io = read_json(pb_manifest)["io"]
            input_name = input_name or io["input_name"]
            output_name = output_name or io["output_name"]
        else:
            input_name, output_name = tfgraph.resolve_io(gd, input_name, output_name, str(pb))
    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(
            gd, input_names=[input_name], output_names=[output_name], opset=opset
        )
    except Exception as exc:
        raise TrtflowError(
            f"{pb}: tf2onnx failed ({type(exc).__name__}: {exc})",
            "check the graph's ops are supported by tf2onnx 1.17 at this opset",
        ) from None
    onnx.checker.check_model(model_proto)
    out_onnx = Path(out_onnx)
    with atomic_path(out_onnx) as tmp:
        onnx.save(model_proto, str(tmp))
    contract = io_contract(model_proto)
    for t in contract:
        log.info("%s %s %s %s", t["kind"], t["name"], t["shape"], t["dtype"])
    tf2onnx_cmd = [
        "python", "-m", "tf2onnx.convert", "--graphdef", pb, "--inputs", input_name,
        "--outputs", output_name, "--opset", opset, "--output", out_onnx,
    ]  # fmt: skip
    return write_manifest(
        out_onnx,
        stage="convert_pb_to_onnx",
        inputs={"pb": pb},
        options={"opset": opset, "input_name": input_name, "output_name": output_name},
        command=stage_command(
            "convert",
            pb=pb,
            out_onnx=out_onnx,
            input_name=input_name,
            output_name=output_name,
            opset=opset,
            pb_manifest=pb_manifest,
        ),
        started=started,
        extra={
            "equivalent_tf2onnx_command": " ".join(map(str, tf2onnx_cmd)),
            "nodes": len(model_proto.graph.node),
            "io": contract,
        },
        manifest_path=manifest_path,
    )
