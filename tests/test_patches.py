"""Tests of trtflow.onnx.patches: each patch on a tiny generated ONNX model, checked on the graph
on ONNX Runtime outputs, plus the default recipe on a real tf2onnx conversion of a Keras model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

from tests import onnx_factory as factory
from trtflow.core.config import default_recipe
from trtflow.core.errors import TrtflowError
from trtflow.onnx.io import io_contract
from trtflow.onnx.patches.registry import PATCHES, PatchOptions, apply_patches, describe_patches
from trtflow.onnx.plugins import NMS_BOXES, NMS_OP, NMS_OUTPUTS, NMS_SCORES, strip_nms

DEFAULT_RECIPE = default_recipe()
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
SIZE = 32
NUM_CLASSES = 2
CH = factory.detector_channels(NUM_CLASSES)
N = factory.detector_boxes(SIZE)
OPTIONS = PatchOptions(image_size=SIZE)


def run(model: onnx.ModelProto, *arrays: np.ndarray) -> list[np.ndarray]:
    """Run ``model`` in ONNX Runtime (CPU) with ``arrays`` fed to its inputs in order."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays, strict=True)))


def nhwc(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, SIZE, SIZE, 3), dtype=np.float32)


def to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == name)


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if tensor in n.input]


def contract(model: onnx.ModelProto) -> dict[str, dict]:
    return {e["name"]: e for e in io_contract(model)}


# --- registry and API -----------------------------------------------------------------------


def test_registry_matches_config_schema_enum():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    assert sorted(PATCHES) == sorted(schema["$defs"]["patch_name"]["enum"])
    descriptions = describe_patches()
    assert list(descriptions) == list(PATCHES)
    assert all(isinstance(d, str) and len(d) > 10 for d in descriptions.values())


def test_unknown_patch_raises_before_any_work_and_lists_valid_names():
    with pytest.raises(TrtflowError) as info:
        apply_patches(factory.tiny_detector(), ["nchw_input", "nchw_inputs"], OPTIONS)
    assert info.value.what == "unknown patch 'nchw_inputs'"
    assert all(name in info.value.fix for name in PATCHES)


@pytest.mark.parametrize(
    "kwargs", [{"batch": 0}, {"batch": "static"}, {"image_size": 0}, {"iou_threshold": 1.5}]
)
def test_patch_options_reject_bad_values(kwargs):
    with pytest.raises(TrtflowError):
        PatchOptions(**{"image_size": SIZE, **kwargs})


def test_report_counts_and_input_model_untouched():
    model = factory.tiny_detector()
    before = model.SerializeToString()
    _, report = apply_patches(model, ["nchw_input", "drop_noops"], OPTIONS)
    assert model.SerializeToString() == before
    assert [(r["name"], r["nodes_before"], r["nodes_after"]) for r in report] == [
        ("nchw_input", 11, 10),
        ("drop_noops", 10, 8),
    ]
    assert all(r["changes"] for r in report)


# --- nchw_input ------------------------------------------------------------------------------


def test_nchw_input_removes_leading_transpose():
    model = factory.tiny_detector()
    patched, report = apply_patches(model, ["nchw_input"], OPTIONS)
    assert contract(patched)["input_1"]["shape"] == ["unk__0", 3, SIZE, SIZE]
    assert [n.op_type for n in consumers(patched, "input_1")] == ["Conv"]
    assert ops(patched).count("Transpose") == ops(model).count("Transpose") - 1
    x = nhwc(2)
    np.testing.assert_array_equal(run(patched, to_nchw(x))[0], run(model, x)[0])
    assert "removed 1 Transpose" in report[0]["changes"][0]


def test_nchw_input_handles_several_transposes_and_an_nhwc_consumer():
    model = factory.multi_transpose_model()
    patched, report = apply_patches(model, ["nchw_input"], OPTIONS)
    users = consumers(patched, "x")
    # Both Transpose(0,3,1,2) are gone; only the Shape still needs NHWC, through one Transpose.
    assert sorted(n.op_type for n in users) == ["Conv", "Relu", "Transpose"]
    (back,) = [n for n in users if n.op_type == "Transpose"]
    assert back.name == "trtflow/nchw_input/x/to_nhwc"
    assert [n.op_type for n in consumers(patched, back.output[0])] == ["Shape"]
    assert contract(patched)["x"]["shape"] == ["n", 3, 8, 8]
    x = np.random.default_rng(3).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(run(patched, to_nchw(x))[0], run(model, x)[0], rtol=1e-6)
    assert "removed 2 Transpose" in report[0]["changes"][0]


def test_nchw_input_leaves_an_nchw_model_alone(caplog):
    model = factory.tiny_detector(nhwc=False)
    with caplog.at_level("INFO", logger="trtflow.onnx.patches"):
        patched, report = apply_patches(model, ["nchw_input"], OPTIONS)
    assert report[0]["changes"] == []
    assert ops(patched) == ops(model)
    assert contract(patched) == contract(model)
    assert (
        f"input 'input_1' [unk__0,3,{SIZE},{SIZE}] is NCHW (dim 1 is the 3 channels, dims 2-3 "
        f"{SIZE}x{SIZE} = the image size): left as is, already NCHW" in caplog.text
    )


def test_nchw_input_states_an_nhwc_input_it_cannot_transpose(caplog):
    """A classifier's NHWC input with no Transpose behind it (issue 14): said to be NHWC, why,
    and left as it is, as a warning."""
    x = gs.Variable("x:0", np.float32, [1, SIZE, SIZE, 3])
    y = gs.Variable("y:0", np.float32, [1, 3])
    mean = gs.Node("ReduceMean", "mean", {"axes": [1, 2], "keepdims": 0}, [x], [y])
    model = gs.export_onnx(gs.Graph(nodes=[mean], inputs=[x], outputs=[y], opset=17))
    with caplog.at_level("INFO", logger="trtflow.onnx.patches"):
        patched, report = apply_patches(model, ["nchw_input"], OPTIONS)
    assert report[0]["changes"] == [] and contract(patched) == contract(model)
    (record,) = [r for r in caplog.records if "nchw_input: input" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"nchw_input: input 'x:0' [1,{SIZE},{SIZE},3] is NHWC (dim 3 is the 3 channels, dims "
        f"1-2 {SIZE}x{SIZE} = the image size): left as is, no Transpose(0,3,1,2) to remove "
        "among its consumers (ReduceMean)"
    )


@pytest.mark.parametrize(
    "shape,layout",
    [([1, 64, 64, 3], "NHWC"), (["n", 3, 64, 64], "NCHW"), ([1, 64, 64, 1], "NHWC"),
     ([1, 1, 64, 64], "NCHW"), ([1, 3, 3, 3], "unknown"), ([1, 5, 7, 9], "unknown"),
     ([1, 64, 64], "unknown"), (None, "unknown")],
)  # fmt: skip
def test_image_layout(shape, layout):
    from trtflow.images.io import explain_image_layout

    assert explain_image_layout(shape, 64)[0] == layout


# --- fix_batch -------------------------------------------------------------------------------


@pytest.mark.parametrize("exported_batch", ["unk__0", 1])
def test_fix_batch_dynamic_frees_hard_coded_reshape(exported_batch):
    model = factory.tiny_detector(batch=exported_batch)
    if exported_batch != 1:
        # The hard-coded [1,-1,C] folds a batch of 4 into the box axis: what fix_batch fixes.
        assert run(model, nhwc(4))[0].shape == (1, 4 * N, CH)
    patched, report = apply_patches(model, ["fix_batch"], OPTIONS)
    assert contract(patched)["input_1"]["shape"] == ["batch", SIZE, SIZE, 3]
    assert contract(patched)["detections"]["shape"] == ["batch", N, CH]
    (reshape,) = [n for n in patched.graph.node if n.op_type == "Reshape"]
    assert numpy_helper.to_array(initializer(patched, reshape.input[1])).tolist() == [-1, N, CH]
    x = nhwc(4, seed=1)
    np.testing.assert_array_equal(run(patched, x[:1])[0], run(model, x[:1])[0])
    singles = np.concatenate([run(model, x[i : i + 1])[0] for i in range(4)])
    batch4 = run(patched, x)[0]
    assert batch4.shape == (4, N, CH)
    np.testing.assert_allclose(batch4, singles, rtol=1e-6, atol=1e-7)
    assert any("[1, -1, 7] -> [-1, 768, 7]" in c for c in report[0]["changes"])


def test_fix_batch_fixed_int():
    model = factory.tiny_detector()
    patched, _ = apply_patches(model, ["fix_batch"], PatchOptions(image_size=SIZE, batch=2))
    assert contract(patched)["input_1"]["shape"] == [2, SIZE, SIZE, 3]
    assert contract(patched)["detections"]["shape"] == [2, N, CH]
    x = nhwc(2, seed=2)
    singles = np.concatenate([run(model, x[i : i + 1])[0] for i in range(2)])
    np.testing.assert_allclose(run(patched, x)[0], singles, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("shape", "data_shape", "expected"),
    [
        ([1, -1, 85], ["batch", 3, 20, 20, 85], [-1, 1200, 85]),  # N computed
        ([1, -1, 85], ["batch", 3, "h", "w", 85], [0, -1, 85]),  # N unknown: copy the batch
        ([1, 3, 85, 20, 20], ["batch", 255, 20, 20], [-1, 3, 85, 20, 20]),
        ([1, 0, -1], ["batch", 3, 40], [-1, 3, 40]),  # 0 copies dim 1
    ],
)
def test_batch_free_reshape_target(shape, data_shape, expected):
    from trtflow.onnx.patches.batch import _batch_free_reshape

    assert _batch_free_reshape(np.array(shape), data_shape, allowzero=False) == expected


# --- rename_io -------------------------------------------------------------------------------


def test_rename_io():
    model = factory.tiny_detector()
    patched, report = apply_patches(model, ["rename_io"], OPTIONS)
    assert [(e["kind"], e["name"]) for e in io_contract(patched)] == [
        ("input", "images"),
        ("output", "output0"),
    ]
    x = nhwc(1)
    np.testing.assert_array_equal(run(patched, x)[0], run(model, x)[0])
    assert report[0]["changes"] == [
        "renamed 'input_1' -> 'images'",
        "renamed 'detections' -> 'output0'",
    ]
    custom = PatchOptions(image_size=SIZE, input_name="in", output_name="out")
    renamed, _ = apply_patches(model, ["rename_io"], custom)
    assert [e["name"] for e in io_contract(renamed)] == ["in", "out"]


def test_rename_io_needs_a_single_output():
    model = factory.tiny_detector()
    with pytest.raises(TrtflowError, match="one output"):
        apply_patches(model, ["efficient_nms", "rename_io"], OPTIONS)


# --- drop_noops ------------------------------------------------------------------------------


def test_drop_noops_rewires_consumers_and_keeps_the_output_name():
    model = factory.noop_chain_model()
    patched, report = apply_patches(model, ["drop_noops"], OPTIONS)
    # Relu, Mul by 2 and the rank-raising Add of 0 (a real broadcast) survive; the last Identity
    # fed the graph output, so the Add now produces 'y' directly.
    assert ops(patched) == ["Relu", "Mul", "Add"]
    assert patched.graph.node[-1].output[0] == "y"
    assert [e["name"] for e in io_contract(patched)] == ["x", "y"]
    assert len(report[0]["changes"]) == 10
    x = np.random.default_rng(4).normal(size=(2, 3, 4)).astype(np.float32)
    (out,) = run(patched, x)
    assert out.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(out, run(model, x)[0])


@pytest.mark.parametrize(
    ("x_shape", "c_shape", "identity"),
    [
        ([2, 3, 4], [4], True),
        ([2, 3, 4], [3, 1], True),
        ([2, 3, 4], [], True),
        ([2, 3, 1], [4], False),  # broadcasting would grow the last dim
        (["n", 3, 4], [2, 1, 1], False),  # n may be 1 at run time
        ([3, 4], [1, 1, 1], False),  # raises the rank
        (None, [], True),
        (None, [1], False),
    ],
)
def test_broadcast_is_identity(x_shape, c_shape, identity):
    from trtflow.onnx.patches.cleanup import _broadcast_is_identity

    assert _broadcast_is_identity(x_shape, c_shape) is identity


# --- sanitize --------------------------------------------------------------------------------


def test_sanitize_folds_static_shape_chain():
    model = factory.shape_chain_model()
    patched, report = apply_patches(model, ["sanitize"], OPTIONS)
    # Shape -> Gather -> Concat folds to a constant only because shapes are inferred first.
    assert ops(patched) == ["Relu", "Reshape"]
    shape_input = patched.graph.node[1].input[1]
    assert numpy_helper.to_array(initializer(patched, shape_input)).tolist() == [2, -1]
    assert report[0]["nodes_before"] == 5 and report[0]["nodes_after"] == 2
    x = np.arange(-12, 12, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(run(patched, x)[0], run(model, x)[0])


# --- int64_to_int32 --------------------------------------------------------------------------


def test_int64_to_int32_converts_only_where_the_spec_allows():
    model = factory.tiny_detector()
    patched, report = apply_patches(model, ["int64_to_int32"], OPTIONS)
    onnx.checker.check_model(patched, full_check=True)
    nodes = {n.name: n for n in patched.graph.node}

    def values(node: str, slot: int) -> np.ndarray:
        return numpy_helper.to_array(initializer(patched, nodes[node].input[slot]))

    assert values("gather", 1).dtype == np.int32
    assert [values("slice", s).dtype for s in (1, 2, 3)] == [np.int32] * 3
    assert values("slice", 2).tolist() == [np.iinfo(np.int32).max]  # INT64_MAX clamped
    assert values("head/reshape", 1).dtype == np.int64  # Reshape's shape is int64-only
    changes = report[0]["changes"]
    assert any("kept INT64 'head/shape'" in c and "only takes tensor(int64)" in c for c in changes)
    x = nhwc(1)
    np.testing.assert_array_equal(run(patched, x)[0], run(model, x)[0])


# --- denormalize_boxes -----------------------------------------------------------------------


def test_denormalize_boxes_scales_xywh_once():
    model = factory.tiny_detector()
    patched, report = apply_patches(model, ["denormalize_boxes", "denormalize_boxes"], OPTIONS)
    assert [e["name"] for e in io_contract(patched)] == ["input_1", "detections"]
    assert ops(patched).count("Mul") == ops(model).count("Mul") + 1
    assert report[1]["changes"] == []  # idempotent
    x = nhwc(2)
    ref = run(model, x)[0]
    out = run(patched, x)[0]
    np.testing.assert_allclose(out[..., :4], ref[..., :4] * SIZE, rtol=1e-6)
    np.testing.assert_array_equal(out[..., 4:], ref[..., 4:])


def test_detection_patches_check_num_classes():
    wrong = PatchOptions(image_size=SIZE, num_classes=NUM_CLASSES + 1)
    for patch in ("denormalize_boxes", "efficient_nms"):
        with pytest.raises(TrtflowError, match="num_classes"):
            apply_patches(factory.tiny_detector(), [patch], wrong)


# --- efficient_nms ---------------------------------------------------------------------------


def test_efficient_nms_plugin_and_strip_nms_parity():
    model = factory.tiny_detector()
    options = PatchOptions(image_size=SIZE, max_detections=50, score_threshold=0.3)
    patched, _ = apply_patches(model, ["fix_batch", "efficient_nms"], options)
    (plugin,) = [n for n in patched.graph.node if n.op_type == NMS_OP]
    assert plugin.domain == ""
    assert plugin.name == "trtflow/efficient_nms/plugin"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin.attribute}
    assert attrs == {
        "plugin_version": b"1",
        "background_class": -1,
        "max_output_boxes": 50,
        "score_threshold": pytest.approx(0.3),
        "iou_threshold": pytest.approx(0.45),
        "score_activation": 0,
        "box_coding": 1,
    }
    assert list(plugin.input) == [NMS_BOXES, NMS_SCORES]
    outputs = {e["name"]: (e["shape"], e["dtype"]) for e in io_contract(patched)[1:]}
    assert outputs == {
        "num_dets": (["batch", 1], "int32"),
        "det_boxes": (["batch", 50, 4], "float32"),
        "det_scores": (["batch", 50], "float32"),
        "det_classes": (["batch", 50], "int32"),
    }
    assert list(outputs) == list(NMS_OUTPUTS)

    stripped = strip_nms(patched)
    assert NMS_OP not in ops(stripped)
    assert contract(stripped)[NMS_SCORES]["shape"] == ["batch", N, NUM_CLASSES]
    x = nhwc(3, seed=5)
    ref = np.concatenate([run(model, x[i : i + 1])[0] for i in range(3)])
    boxes, scores = run(stripped, x)
    np.testing.assert_allclose(boxes, ref[..., :4], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scores, ref[..., 4:5] * ref[..., 5:], rtol=1e-6, atol=1e-7)
    with pytest.raises(TrtflowError):
        strip_nms(model)


# --- io_contract -----------------------------------------------------------------------------


def test_io_contract():
    assert io_contract(factory.tiny_detector()) == [
        {
            "name": "input_1",
            "shape": ["unk__0", SIZE, SIZE, 3],
            "dtype": "float32",
            "kind": "input",
        },
        {"name": "detections", "shape": ["unk__1", N, CH], "dtype": "float32", "kind": "output"},
    ]


# --- the default recipe on a real tf2onnx conversion ---------------------------------------


def keras_yolo_like():
    """Two Conv heads -> Reshape((-1, 5+C)) -> Concat -> Sigmoid -> YOLOv5-style xywh decode."""
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers

    class Decode(layers.Layer):
        def call(self, p):
            xy = p[..., 0:2] * 2.0 - 0.5
            wh = (p[..., 2:4] * 2.0) ** 2
            return tf.concat([xy, wh, p[..., 4:]], axis=-1)

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    p3 = layers.Reshape((-1, CH))(layers.Conv2D(3 * CH, 1)(x))
    y = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    p4 = layers.Reshape((-1, CH))(layers.Conv2D(3 * CH, 1)(y))
    out = Decode()(layers.Activation("sigmoid")(layers.Concatenate(axis=1)([p3, p4])))
    return keras.Model(inp, out)


def test_default_recipe_on_real_tf2onnx_model():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    keras_model = keras_yolo_like()
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input_1"),)
    raw, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    assert ops(raw)[0] == "Transpose"  # tf2onnx's NHWC -> NCHW in front of the first Conv

    patched, report = apply_patches(raw, DEFAULT_RECIPE, OPTIONS)
    n = 3 * (SIZE // 2) ** 2 + 3 * (SIZE // 4) ** 2
    assert io_contract(patched) == [
        {"name": "images", "shape": ["batch", 3, SIZE, SIZE], "dtype": "float32", "kind": "input"},
        {"name": "output0", "shape": ["batch", n, CH], "dtype": "float32", "kind": "output"},
    ]
    assert [n.op_type for n in consumers(patched, "images")] == ["Conv"]
    assert "Shape" not in ops(patched)  # fix_batch replaced the runtime Reshape shapes
    by_step = {r["name"]: r for r in report}
    assert by_step["nchw_input"]["nodes_after"] == by_step["nchw_input"]["nodes_before"] - 1
    assert by_step["fix_batch"]["nodes_after"] < by_step["fix_batch"]["nodes_before"]
    assert any("INT64 -> INT32" in c for c in by_step["int64_to_int32"]["changes"])
    # rows (y, x, anchor), xy = 2s - 0.5, wh = (2s)^2: fold_decode rebuilds it per head
    (change,) = by_step["fold_decode"]["changes"]
    assert "2 heads (y_x_anchor)" in change and "Slice 3 -> 0" in change, change
    assert "Slice" not in ops(patched)
    for node in patched.graph.node:
        if node.op_type in ("Gather", "Slice"):
            for name in node.input[1:]:
                init = [i for i in patched.graph.initializer if i.name == name]
                assert not init or init[0].data_type == onnx.TensorProto.INT32, node.name

    for batch in (1, 3):
        x = nhwc(batch, seed=10 + batch)
        expected = keras_model(x).numpy()
        (out,) = run(patched, to_nchw(x))
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("decode", ["lean_decode", "fold_decode"])
def test_decode_rewrites_on_the_builtin_yolov5_are_bit_identical(decode):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    from trtflow.tf.yolov5 import build_yolov5

    size = 64
    keras_model = build_yolov5("n", 3, size)
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="images"),)
    raw, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    options = PatchOptions(image_size=size)
    assert "fold_decode" in DEFAULT_RECIPE  # the default recipe's decode rewrite
    without = [p for p in DEFAULT_RECIPE if p != "fold_decode"]
    recipe = [decode if p == "fold_decode" else p for p in DEFAULT_RECIPE]
    plain, _ = apply_patches(raw, without, options)
    lean, report = apply_patches(raw, recipe, options)
    step = next(r for r in report if r["name"] == decode)
    assert len(step["changes"]) == 1 and "3 heads" in step["changes"][0], step
    assert ops(lean).count("Transpose") == ops(plain).count("Transpose") - 3
    assert "Slice" in ops(plain) and "Slice" not in ops(lean)
    assert io_contract(lean) == io_contract(plain)
    x = to_nchw(np.random.default_rng(5).random((2, size, size, 3), dtype=np.float32))
    (a,) = run(plain, x)
    (b,) = run(lean, x)
    assert np.array_equal(a, b)  # the same operations on the same values
    again, report = apply_patches(lean, [decode], options)
    if decode == "lean_decode":  # its own output is not the pattern it looks for
        assert report[0]["changes"] == [] and ops(again) == ops(lean)
    else:  # measured again, the same constants come out: the same graph
        assert "bit-identical" in report[0]["changes"][0] and ops(again) == ops(lean)
        (c,) = run(again, x)
        assert np.array_equal(b, c)


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("order", ["y_x_anchor", "anchor_y_x"])
def test_fold_decode_rebuilds_other_exporters_decode_per_head(order, normalized):
    model = factory.yolo_decode_model(order, size=32, normalized=normalized)
    assert {"Slice", "Pow"} <= set(ops(model))
    options = PatchOptions(image_size=32)
    folded, report = apply_patches(model, ["fold_decode"], options)
    (change,) = report[0]["changes"]
    assert f"2 heads ({order})" in change and "Slice 6 -> 0, Pow 2 -> 0" in change, change
    assert ops(folded).count("Transpose") == 2  # one per head
    assert not {"Slice", "Pow", "Gather"} & set(ops(folded))
    # the normalising / denormalising Muls are folded into the per-head constants
    assert ops(folded).count("Mul") == 3 * 2
    assert io_contract(folded) == io_contract(model)
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 32, 32), dtype=np.float32)
        (a,) = run(model, x)
        (b,) = run(folded, x)
        assert b.shape == a.shape == (batch, 3 * (16 * 16 + 8 * 8), CH)
        np.testing.assert_array_equal(b[..., 4:], a[..., 4:])  # scores: the same sigmoid
        np.testing.assert_allclose(b[..., :4], a[..., :4], rtol=0, atol=32 * 1e-5)


def test_fold_decode_leaves_an_unknown_row_order_and_a_non_yolo_decode_alone():
    options = PatchOptions(image_size=32)
    scrambled = factory.yolo_decode_model("y_x_anchor", scramble=True)
    same, report = apply_patches(scrambled, ["fold_decode"], options)
    assert report[0]["changes"] == [] and sorted(ops(same)) == sorted(ops(scrambled))
    # every field the plain sigmoid (no xy/wh decode): wh is not (s*s)*Q, left alone
    plain = factory.tiny_detector(num_classes=NUM_CLASSES, size=SIZE)
    same, report = apply_patches(plain, ["fix_batch", "fold_decode"], OPTIONS)
    assert report[-1]["changes"] == [] and "Gather" in ops(same)
