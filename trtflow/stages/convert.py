"""Stage "convert" (convert host): frozen GraphDef -> ONNX with tf2onnx."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import time
from collections import OrderedDict
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


class _Collecting(OrderedDict):
    """tf2onnx's optimizers, handed to ``optimize_graph`` one by one after a garbage collection.

    ``optimize_graph`` deep-copies the whole graph (weights included) before each optimizer so
    that a failing one can be skipped; the graph the copy replaces sits in a reference cycle
    (graph <-> nodes) that only Python's cyclic collector frees, and weight buffers do not
    count towards its thresholds, so the copies piled up: 24 of them for YOLOv5, past 17 GB
    for yolov5x. Collecting as the loop asks for the next optimizer, before it copies, leaves
    two."""

    def items(self) -> Any:  # type: ignore[override]
        for item in super().items():
            gc.collect()
            yield item


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _meta_graph_bytes(pb: str | Path, fetch: list[str]) -> bytes:
    """The serialized MetaGraphDef tf2onnx hands grappler for the frozen ``pb``, made from the
    file's bytes: ``export_meta_graph``'s ``meta_info_def`` (computed on the graph's nodes
    without their weights), the ``train_op`` collection of the tensors to keep, then the
    GraphDef field as the file holds it. Protobuf parses it to the very message tf2onnx
    builds; no Python copy of the weights exists beside these bytes."""
    import tensorflow as tf

    from trtflow.tf import graph as tfgraph

    gd = tfgraph.read_graph_def(pb)  # checks it is a GraphDef; freed below
    skeleton = tf.compat.v1.GraphDef()
    for node in gd.node:
        skeleton.node.add(name=node.name, op=node.op)
    skeleton.library.CopyFrom(gd.library)
    del gd
    with tf.Graph().as_default():
        meta = tf.compat.v1.train.export_meta_graph(graph_def=skeleton)
    meta.ClearField("graph_def")
    meta.collection_def["train_op"].node_list.value.extend(fetch)
    data = Path(pb).read_bytes()
    graph_def_field = b"\x12" + _varint(len(data))  # field 2 (graph_def), length-delimited
    return b"".join((meta.SerializeToString(), graph_def_field, data))


class _Serialized:
    """A message already serialized: what ``tf_optimizer.OptimizeGraph`` takes (in open-source
    TensorFlow it only calls ``SerializeToString``), so grappler gets the bytes without a
    protobuf object behind them."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 — protobuf's name
        return self._data


def _grappler(meta: bytes) -> Any:
    """tf2onnx's ``tf_loader.tf_optimize_grappler`` (its config, TF 2.x) on serialized ``meta``."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.grappler import tf_optimizer

    config = config_pb2.ConfigProto()
    config.graph_options.infer_shapes = True
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = ["constfold", "function", "dependency"]
    rewrite.experimental_disable_folding_quantization_emulation = True
    return tf_optimizer.OptimizeGraph(config, _Serialized(meta))


def pb_to_onnx_proto(pb: str | Path, input_name: str, output_name: str, opset: int) -> Any:
    """tf2onnx's ``convert.from_graph_def`` of the frozen ``pb``, with the memory it wastes
    given back; the same ONNX.

    The same steps and options: grappler (``tf_optimize``), ``process_tf_graph``,
    ``optimize_graph`` (catching a failing optimizer as before), ``make_model``. Left out is
    ``from_graph_def``'s ``freeze_session``, whose result it throws away (it optimises the
    given GraphDef, a frozen one here). The TF graphs are freed before the ONNX optimisation
    and the optimizers' graph copies as they are replaced (``_Collecting``).
    """
    import tensorflow as tf
    from tf2onnx import constants, optimizer
    from tf2onnx.tfonnx import process_tf_graph

    inputs, outputs = [input_name], [output_name]
    gc.freeze()  # what is alive now (TF's modules) is never garbage: collect only what follows
    try:
        phase = _Phases()
        meta = _meta_graph_bytes(pb, inputs + outputs)
        phase("read_pb")
        with tf.device("/cpu:0"), tf.Graph().as_default():
            frozen = _grappler(meta)
        del meta
        phase("grappler")
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(frozen, name="")
            del frozen
            g = process_tf_graph(
                tf_graph, continue_on_error=True, opset=opset, input_names=inputs,
                output_names=outputs,
            )  # fmt: skip
        del tf_graph
        phase("process_tf_graph")
        catch = os.environ.get(constants.ENV_TF2ONNX_CATCH_ERRORS, "TRUE").upper() == "TRUE"
        opts = _Collecting(optimizer._get_optimizers())
        g = optimizer.optimize_graph(g, catch, optimizers=opts)
        phase("optimize_graph")
        model_proto = g.make_model("converted from unknown")
        del g
        phase("make_model")
        return model_proto
    finally:
        gc.unfreeze()


class _Phases:
    """Ends a conversion phase: frees its garbage (Python's and glibc's heap), logs its wall
    time and the process's peak RSS so far."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self, name: str) -> None:
        import resource

        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # glibc: give freed heap back
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("convert: %s %.1f s, peak RSS so far %.0f MB", name, time.time() - self.t, peak)
        self.t = time.time()


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

    from trtflow.onnx.io import io_contract

    started = time.time()
    if not (input_name and output_name):
        if pb_manifest and Path(pb_manifest).is_file():
            io = read_json(pb_manifest)["io"]
            input_name = input_name or io["input_name"]
            output_name = output_name or io["output_name"]
        else:  # read the graph for its names only, and let it go before converting
            from trtflow.tf import graph as tfgraph

            gd = tfgraph.read_graph_def(pb)
            input_name, output_name = tfgraph.resolve_io(gd, input_name, output_name, str(pb))
            del gd
    try:
        model_proto = pb_to_onnx_proto(pb, input_name, output_name, opset)
    except (TrtflowError, MemoryError):
        raise
    except Exception as exc:
        raise TrtflowError(
            f"{pb}: tf2onnx failed ({type(exc).__name__}: {exc})",
            "check the graph's ops are supported by tf2onnx 1.17 at this opset",
        ) from None
    contract, nodes = io_contract(model_proto), len(model_proto.graph.node)
    data = model_proto.SerializeToString()  # the bytes onnx.save writes, made once
    del model_proto
    onnx.checker.check_model(data)
    out_onnx = Path(out_onnx)
    with atomic_path(out_onnx) as tmp:
        tmp.write_bytes(data)
    del data
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
            "nodes": nodes,
            "io": contract,
        },
        manifest_path=manifest_path,
    )
