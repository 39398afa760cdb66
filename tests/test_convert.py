"""The convert stage: trtflow's lean tf2onnx path gives the ONNX tf2onnx's ``from_graph_def``
gives, and ``graph_digest`` tells apart exactly what computes differently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from tests import onnx_factory as factory
from trtflow.onnx.io import graph_digest

REPO = Path(__file__).resolve().parent.parent


def _renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == old:
            t.name = new
    for node in out.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    return out


def test_graph_digest_is_blind_to_initializer_names_only():
    model = factory.tiny_detector()
    digest = graph_digest(model)
    first = model.graph.initializer[0].name
    assert graph_digest(_renamed(model, first, "const_fold_opt__999")) == digest

    flipped = onnx.ModelProto()
    flipped.CopyFrom(model)
    t = flipped.graph.initializer[0]
    w = numpy_helper.to_array(t).copy()
    w.view("uint32").flat[0] ^= 1  # one bit of one weight
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    assert graph_digest(flipped) != digest

    attr = onnx.ModelProto()
    attr.CopyFrom(model)
    conv = next(n for n in attr.graph.node if n.op_type == "Conv")
    conv.attribute.append(onnx.helper.make_attribute("group", 1))
    assert graph_digest(attr) != digest

    renamed_node = onnx.ModelProto()
    renamed_node.CopyFrom(model)
    renamed_node.graph.node[0].name += "_x"
    assert graph_digest(renamed_node) != digest


CONVERT = r"""
import sys
pb, out, how = sys.argv[1:4]
if how == "tf2onnx":
    import onnx, tensorflow as tf, tf2onnx
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(open(pb, "rb").read())
    model, _ = tf2onnx.convert.from_graph_def(gd, input_names=["x:0"],
                                              output_names=["Identity:0"], opset=17)
    onnx.checker.check_model(model)
    onnx.save(model, out)
else:
    from trtflow.stages.convert import convert_pb_to_onnx
    convert_pb_to_onnx(pb, out, "x:0", "Identity:0", 17)
"""


@pytest.mark.slow
def test_lean_conversion_gives_tf2onnx_s_onnx(tmp_path):
    """Both in fresh processes (tf2onnx numbers nodes per process), on a YOLOv5n graph."""
    from pb_factory import other_exporter_pb

    pb = other_exporter_pb(tmp_path / "model.pb", 64, classes=2)
    digests = {}
    for how in ("tf2onnx", "trtflow"):
        out = tmp_path / f"{how}.onnx"
        subprocess.run([sys.executable, "-c", CONVERT, str(pb), str(out), how], check=True,
                       cwd=REPO, timeout=600)  # fmt: skip
        digests[how] = graph_digest(onnx.load(str(out)))
    assert digests["trtflow"] == digests["tf2onnx"]
