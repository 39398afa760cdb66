"""A user's pb with only `source` and `path`: what trtflow discovers, and the config overriding it.

The pb is the other exporter's layout (tests/pb_factory.py): NHWC ``x:0`` [1,64,64,3] with the
batch fixed at 1, ``Identity:0`` [1,N,5+C] with xywh normalised to 0-1, rows (y, x, anchor).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, tiny_config
from pb_factory import builtin_rows_as_y_x_anchor, classifier_pb, other_exporter_pb

from trtflow.core.errors import TrtflowError

SIZE = 64


@pytest.fixture(scope="module")
def other_pb(tmp_path_factory):
    return other_exporter_pb(tmp_path_factory.mktemp("pb") / "yolov5n-other.pb", SIZE)


# --- pbinfo: the image input without TensorFlow -------------------------------------------------


def _graph_pb(path, *shapes, const_mib=0):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        ins = [
            tf.compat.v1.placeholder(tf.float32, shape, name=f"in{i}")
            for i, shape in enumerate(shapes)
        ]
        big = tf.constant(np.ones(const_mib * 2**18, np.float32), name="weights")
        tf.identity(tf.reduce_sum(big) + sum(tf.reduce_sum(x) for x in ins), name="out")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_pbinfo_reads_placeholders_like_tensorflow(tmp_path, other_pb):
    from trtflow.tf import graph as tfgraph
    from trtflow.tf import pbinfo

    cases = {
        "nhwc_dynamic": [[None, 96, 96, 3]],
        "nchw_fixed": [[4, 3, 128, 128]],
        "unknown_rank": [None],
        "two_inputs": [[1, 64, 64, 3], [None, 10]],
    }
    for name, shapes in cases.items():
        pb = _graph_pb(tmp_path / f"{name}.pb", *shapes, const_mib=4)
        gd = tfgraph.read_graph_def(pb)
        tf_view = [(f"{n.name}:0", tfgraph._shape_of(n)) for n in gd.node if n.op == "Placeholder"]
        ours = [(p.name, list(p.shape) if p.shape is not None else None)
                for p in pbinfo.placeholders(pb)]  # fmt: skip
        assert ours == tf_view, name
    assert pbinfo.image_input(tmp_path / "nhwc_dynamic.pb") == pbinfo.ImageInput(
        "in0:0", (-1, 96, 96, 3), 96, None
    )
    assert pbinfo.image_input(tmp_path / "nchw_fixed.pb").image_size == 128
    assert pbinfo.image_input(tmp_path / "nchw_fixed.pb").batch == 4
    assert pbinfo.image_input(tmp_path / "unknown_rank.pb") is None
    assert pbinfo.image_input(tmp_path / "two_inputs.pb") is None  # ambiguous
    assert pbinfo.image_input(tmp_path / "two_inputs.pb", "in0").image_size == 64
    assert pbinfo.image_input(other_pb) == pbinfo.ImageInput("x:0", (1, 64, 64, 3), 64, 1)


def test_pbinfo_refuses_what_is_not_a_graph(tmp_path):
    from trtflow.tf import pbinfo

    bad = tmp_path / "bad.pb"
    bad.write_bytes(np.random.default_rng(0).bytes(512))
    assert pbinfo.image_input(bad) is None
    assert pbinfo.image_input(tmp_path / "missing.pb") is None
    (tmp_path / "empty.pb").write_bytes(b"")
    assert pbinfo.image_input(tmp_path / "empty.pb") is None
    with pytest.raises(ValueError):
        pbinfo.placeholders(bad)


def test_common_smk_imports_no_tensorflow():
    """The DAG builds without TensorFlow: pbinfo is pure Python."""
    import subprocess
    import sys

    code = (
        "import sys, trtflow.tf.pbinfo; "
        "heavy = {'tensorflow', 'onnx', 'onnxruntime', 'tensorrt'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- box format and decode layout from the outputs ---------------------------------------------


def _decoded(layout: str, size: int = SIZE, classes: int = 2, seed: int = 0) -> np.ndarray:
    """YOLOv5-decoded rows [2, N, 5+C] in pixels, ordered ``layout``, from random sigmoids."""
    from trtflow.tf.discover import _cells

    cells = _cells(layout, size, 3)
    s = np.random.default_rng(seed).random((2, len(cells), 5 + classes))
    y = s.copy()
    y[..., :2] = (2 * s[..., :2] - 0.5 + cells[:, :2]) * cells[:, 2:]
    y[..., 2:4] = (2 * s[..., 2:4]) ** 2 * 100
    return y.astype(np.float32)


def test_channels_first_output_is_refused():
    from trtflow.tf.discover import check_rows

    with pytest.raises(TrtflowError) as err:
        check_rows((1, 7, 252), SIZE, "m.pb: output Identity:0")
    assert "[1, 7, 252]" in str(err.value) and "[B,5+C,N]" in str(err.value)
    check_rows((1, 252, 7), SIZE, "ok")
    check_rows((1, 63, 85), 32, "80 classes at 32 px: fewer rows than channels, still rows")


def test_box_format_from_box_centres():
    from trtflow.tf.discover import discover_box_format

    y = _decoded("anchor_y_x")
    assert discover_box_format(y).value == "pixels"
    normalized = y.copy()
    normalized[..., :4] /= SIZE
    assert normalized[..., 2:4].max() > 1.5  # widths of large anchors exceed 1 at 64 px
    found = discover_box_format(normalized)
    assert found.value == "normalized" and found.source == "discovered"
    assert "<= 1.5" in found.evidence


@pytest.mark.parametrize("layout", ["anchor_y_x", "y_x_anchor"])
def test_decode_layout_from_box_centres(layout):
    from trtflow.tf.discover import discover_decode_layout

    y = _decoded(layout)
    assert discover_decode_layout(y, SIZE, "pixels").value == layout
    y[..., :4] /= SIZE
    assert discover_decode_layout(y, SIZE, "normalized").value == layout
    shuffled = y[:, np.random.default_rng(1).permutation(y.shape[1])]
    assert discover_decode_layout(shuffled, SIZE, "normalized").value == "unknown"
    assert discover_decode_layout(y[:, :-3], SIZE, "normalized").value == "unknown"


def test_test_pb_is_the_builtin_model_reordered_and_normalised(other_pb):
    from trtflow.tf.graph import FrozenGraphRunner
    from trtflow.tf.yolov5 import build_yolov5

    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    runner = FrozenGraphRunner(other_pb, "x:0", "Identity:0")
    assert runner.batch == 1
    y = runner(x)  # fed one image at a time
    expected = builtin_rows_as_y_x_anchor(build_yolov5("n", 2, SIZE, 0)(x).numpy(), SIZE)
    expected[..., :4] /= SIZE
    np.testing.assert_allclose(y, expected, atol=1e-4)


# --- export_pb: findings in the manifest, config overrides, refusal ----------------------------


def test_export_pb_discovers_and_records(tmp_path, other_pb):
    from trtflow.stages.export import export_pb

    man = export_pb(other_pb, tmp_path / "model.pb", "pb", None)
    found = man["discovery"]
    assert found["image_size"] == {**found["image_size"], "value": 64, "source": "graph"}
    assert found["batch"]["value"] == 1 and found["batch"]["source"] == "graph"
    assert found["classes"]["value"] == 2
    assert found["box_format"]["value"] == "normalized"
    assert found["box_format"]["source"] == "discovered"
    assert found["decode_layout"]["value"] == "y_x_anchor"
    assert man["options"]["image_size"] == 64
    assert json.loads((tmp_path / "model.pb.manifest.json").read_text())["discovery"] == found


def test_builtin_model_is_discovered_as_pixels_anchor_y_x(tmp_path):
    from trtflow.stages.export import export_pb, export_saved_model

    sm = export_saved_model(tmp_path / "sm", "builtin", SIZE, "n", 2)
    found = export_pb(sm, tmp_path / "model.pb", "builtin", SIZE)["discovery"]
    assert found["box_format"]["value"] == "pixels"
    assert found["decode_layout"]["value"] == "anchor_y_x"
    assert found["batch"]["value"] == "dynamic" and found["classes"]["value"] == 2


def test_nchw_pb_is_probed_in_its_own_layout(tmp_path):
    from trtflow.stages.export import export_pb
    from trtflow.tf.pbinfo import image_input

    pb = other_exporter_pb(tmp_path / "nchw.pb", SIZE, nchw=True)
    assert image_input(pb).image_size == SIZE
    man = export_pb(pb, tmp_path / "model.pb", "pb", None)
    assert man["io"]["layout"] == "nchw"
    assert man["discovery"]["box_format"]["value"] == "normalized"
    assert man["discovery"]["decode_layout"]["value"] == "y_x_anchor"

    # parity feeds TF the NCHW images it takes, one at a time, and scales its 0-1 boxes
    from trtflow.core.config import default_recipe
    from trtflow.stages.convert import convert_pb_to_onnx
    from trtflow.stages.parity import check_parity
    from trtflow.stages.patch import patch_onnx

    pbm = tmp_path / "model.pb.manifest.json"
    convert_pb_to_onnx(tmp_path / "model.pb", tmp_path / "raw.onnx", "x:0", "Identity:0")
    patch_onnx(tmp_path / "raw.onnx", tmp_path / "p.onnx", default_recipe(), SIZE, pb_manifest=pbm)
    report = check_parity(tmp_path / "model.pb", pbm, tmp_path / "raw.onnx", tmp_path / "p.onnx",
                          tmp_path / "p.onnx.manifest.json", tmp_path / "parity.json",
                          image_size=SIZE, batch=2)  # fmt: skip
    assert report["ok"] and report["patched_vs_tf"]["output0"]["max_rel"] <= 1e-4


def test_configured_values_override_discoveries(tmp_path, other_pb, caplog):
    from trtflow.core.config import default_recipe
    from trtflow.stages.export import export_pb
    from trtflow.stages.patch import patch_onnx

    man = export_pb(other_pb, tmp_path / "model.pb", "pb", 64, box_format="pixels",
                    decode_layout="anchor_y_x")  # fmt: skip
    box = man["discovery"]["box_format"]
    assert box["value"] == "pixels" and box["source"] == "configured"
    assert "discovery said normalized" in box["evidence"]
    assert any("configured pixels, but discovered normalized" in r.message for r in caplog.records)
    layout = man["discovery"]["decode_layout"]
    assert layout["value"] == "anchor_y_x" and layout["source"] == "configured"
    assert "--box-format pixels" in man["command"]

    # patch_onnx follows the manifest (pixels: no denormalize_boxes), or an explicit argument
    import onnx
    from onnx_factory import tiny_detector

    raw = tmp_path / "raw.onnx"
    onnx.save(tiny_detector(size=SIZE), str(raw))
    pixels = patch_onnx(raw, tmp_path / "p.onnx", default_recipe(), SIZE,
                        pb_manifest=tmp_path / "model.pb.manifest.json")  # fmt: skip
    assert "denormalize_boxes" not in pixels["options"]["recipe"]
    normal = patch_onnx(raw, tmp_path / "n.onnx", default_recipe(), SIZE, box_format="normalized",
                        pb_manifest=tmp_path / "model.pb.manifest.json")  # fmt: skip
    assert normal["options"]["recipe"][:2] == ["nchw_input", "denormalize_boxes"]
    assert normal["configured_recipe"] == default_recipe() and normal["box_format"] == "pixels"


def test_configured_image_size_must_match_the_graph(tmp_path, other_pb):
    from trtflow.stages.export import export_pb

    with pytest.raises(TrtflowError) as err:
        export_pb(other_pb, tmp_path / "model.pb", "pb", 96)
    assert "is 64x64, config asks for 96" in str(err.value)
    assert not (tmp_path / "model.pb").exists()


def test_a_classifier_stops_with_one_line(tmp_path):
    pb = classifier_pb(tmp_path / "classifier.pb", SIZE, classes=10)
    out = tmp_path / "out" / "model.pb"
    proc = run_cli("export-pb", "--source", "pb", "--source-path", str(pb), "--out", str(out))
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "output Identity:0 is [1, 10], not a detector output" in lines[0]
    assert "[B,N,5+C]" in lines[0] and "fix:" in lines[0]
    assert not out.exists() and not out.with_name("model.pb.manifest.json").exists()


# --- the workflow: only source and path --------------------------------------------------------


def test_dag_reads_the_image_size_from_the_pb(workdir, other_pb):
    (workdir.path / "models").mkdir()
    (workdir.path / "models/other.pb").write_bytes(other_pb.read_bytes())
    entry = {"source": "pb", "path": "models/other.pb"}
    workdir.write_config(tiny_config({"ext": entry}))
    proc = workdir.snakemake("-n", "results/pb/ext/64/model.pb")
    assert "export_pb" in proc.stdout
    workdir.write_config(tiny_config({"ext": {**entry, "image_sizes": [96]}}))
    assert "results/pb/ext/96/model.pb" in workdir.snakemake("-n", "pb").stdout


@pytest.mark.slow
def test_default_target_with_only_source_and_path(workdir, other_pb):
    """The other exporter's pb runs `snakemake` (all, INT8 stage included) from two keys."""
    (workdir.path / "models").mkdir()
    (workdir.path / "models/other.pb").write_bytes(other_pb.read_bytes())
    cfg = tiny_config({"ext": {"source": "pb", "path": "models/other.pb"}})
    cfg["parity"] = {}  # the default batch 2: the batch-1 graph is fed in chunks
    cfg["int8"] = {"enabled": True, "gate": {"min_map50_vs_fp32": 0.3}}
    cfg["calibration"] = {"count": 4, "holdout": 4}
    workdir.write_config(cfg)
    workdir.snakemake()
    r = workdir.path / "results"
    pb = json.loads((r / "pb/ext/64/model.pb.manifest.json").read_text())["discovery"]
    assert pb["box_format"]["value"] == "normalized"
    assert pb["decode_layout"]["value"] == "y_x_anchor"
    assert pb["batch"]["value"] == 1
    patched = json.loads((r / "patched/ext/64/model.onnx.manifest.json").read_text())
    assert "denormalize_boxes" in patched["options"]["recipe"]
    assert patched["box_format"] == "pixels" and patched["io"][0]["shape"][0] == "batch"
    parity = json.loads((r / "parity/ext/64/parity.json").read_text())
    assert parity["ok"] and parity["batch"] == 2
    assert parity["patched_vs_tf"]["output0"]["max_rel"] <= 1e-4
    steps = {s["name"]: s["changes"] for s in patched["steps"]}
    (fold,) = steps["fold_decode"]  # rebuilt per head in its own (y, x, anchor) row order
    assert "(y_x_anchor)" in fold and "Slice 9 -> 0, Pow 3 -> 0" in fold, fold
    # the Resize of the neck hides the symbolic batch; the reshapes pinning 1 are freed anyway
    assert sum("shape [1, " in c and "-> [-1, " in c for c in steps["fix_batch"]) == 3
    log = (workdir.path / "logs/patch_onnx/ext/64.log").read_text()
    assert "recipe: added denormalize_boxes" in log
    assert (
        "box_format: normalized (discovered"
        in (workdir.path / "logs/export_pb/ext/64.log").read_text()
    )
    assert json.loads((r / "int8_gate/ext/64/gate.json").read_text())["ok"]
    assert "| ext | pb | 64 |" in (r / "summary.md").read_text()
