"""Stage "convert" (convert host): frozen GraphDef -> ONNX with tf2onnx."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from trtflow.errors import TrtflowError
from trtflow.manifest import atomic_path, write_manifest

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


def _collecting(factory: Any) -> Any:
    """``factory`` of a tf2onnx optimizer that first frees the graph copies made so far.

    tf2onnx's ``optimize_graph`` deep-copies the whole graph (weights included) before each
    optimizer so that a failing one can be skipped; the copy it replaces sits in a reference
    cycle (graph <-> nodes) that only Python's cyclic collector frees, and big weight buffers
    do not count towards its thresholds, so the copies piled up: 24 of them for YOLOv5, 16 GB
    for yolov5x. Collecting here, after each copy is made, keeps two alive.
    """

    def make() -> Any:
        gc.collect()
        return factory()

    return make


def pb_to_onnx_proto(pb: str | Path, input_name: str, output_name: str, opset: int) -> Any:
    """tf2onnx's ``convert.from_graph_def`` of the frozen ``pb``, with the memory it wastes
    given back; the same ONNX.

    The same steps and options: grappler (``tf_optimize``), ``process_tf_graph``,
    ``optimize_graph`` (catching a failing optimizer as before), ``make_model``. Left out is
    ``from_graph_def``'s ``freeze_session``, whose result it throws away (it optimises the
    given GraphDef, a frozen one here). The TF graphs are freed before the ONNX optimisation
    and the optimizers' graph copies as they are replaced (``_collecting``).
    """
    import tensorflow as tf
    from tf2onnx import constants, optimizer, tf_loader
    from tf2onnx.tfonnx import process_tf_graph

    from trtflow import tfgraph

    inputs, outputs = [input_name], [output_name]
    gc.freeze()  # what is alive now (TF's modules) is never garbage: collect only what follows
    try:
        phase = _Phases()
        gd = tfgraph.read_graph_def(pb)
        phase("read_pb")
        with tf.device("/cpu:0"), tf.Graph().as_default():
            frozen = tf_loader.tf_optimize(inputs, outputs, gd)
        del gd
        phase("grappler")
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(frozen, name="")
            del frozen
            g = process_tf_graph(
                tf_graph, continue_on_error=True, opset=opset, input_names=inputs,
                output_names=outputs,
            )  # fmt: skip
        del tf_graph
        gc.collect()
        phase("process_tf_graph")
        catch = os.environ.get(constants.ENV_TF2ONNX_CATCH_ERRORS, "TRUE").upper() == "TRUE"
        opts = OrderedDict(
            (name, _collecting(f)) for name, f in optimizer._get_optimizers().items()
        )
        g = optimizer.optimize_graph(g, catch, optimizers=opts)
        gc.collect()
        phase("optimize_graph")
        model_proto = g.make_model("converted from unknown")
        del g
        gc.collect()
        phase("make_model")
        return model_proto
    finally:
        gc.unfreeze()


class _Phases:
    """Logs each conversion phase's wall time and the process's peak RSS so far."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self, name: str) -> None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("convert: %s %.1f s, peak RSS so far %.0f MB", name, time.time() - self.t, peak)
        self.t = time.time()


def convert_pb_to_onnx(
    pb: str | Path,
    out_onnx: str | Path,
    input_name: str,
    output_name: str,
    opset: int = 17,
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Convert ``pb`` with tf2onnx (in process) and write ``out_onnx`` plus its manifest."""
    check_opset(opset)
    import onnx

    from trtflow.patches import io_contract

    started = time.time()
    try:
        model_proto = pb_to_onnx_proto(pb, input_name, output_name, opset)
    except TrtflowError:
        raise
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
        command=["trtflow", "convert", "--pb", pb, "--out", out_onnx, "--opset", opset],
        started=started,
        extra={
            "equivalent_tf2onnx_command": " ".join(map(str, tf2onnx_cmd)),
            "nodes": len(model_proto.graph.node),
            "io": contract,
        },
        manifest_path=manifest_path,
    )


def graph_digest(model: Any) -> str:
    """sha256 of what an ONNX model computes, blind to the names of its initializers.

    tf2onnx's output differs from run to run (the same pb, fresh processes) only in which of
    several equal constants its duplicate merging keeps, i.e. in initializer names; this digest
    replaces every initializer reference by the initializer's dtype, dims and bytes, so two
    conversions that compute bit-identically get the same digest and any other change (a node,
    an attribute, a weight bit, the I/O, the opset) gives another.
    """
    import hashlib

    h = hashlib.sha256()
    graph = model.graph
    inits = {}
    for t in graph.initializer:
        nameless = type(t)()
        nameless.CopyFrom(t)
        nameless.ClearField("name")
        inits[t.name] = hashlib.sha256(nameless.SerializeToString(deterministic=True)).hexdigest()
    for key in sorted(inits.values()):
        h.update(key.encode())
    for node in graph.node:
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[:] = [f"<init {inits[i]}>" if i in inits else i for i in node.input]
        h.update(copy.SerializeToString(deterministic=True))
    for part in (graph.input, graph.output, graph.value_info, model.opset_import):
        for item in part:
            h.update(item.SerializeToString(deterministic=True))
    h.update(f"{model.ir_version} {model.producer_name} {model.producer_version}".encode())
    h.update(f"{model.doc_string} {graph.name} {graph.doc_string}".encode())
    return h.hexdigest()
