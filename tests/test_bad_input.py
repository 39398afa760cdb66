"""Bad model input: one clear line naming the file and the fix, exit != 0, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli, tiny_config, tiny_model


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if " ERROR " in ln]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _two_input_pb(path, names=("a", "b")):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3], name=names[0])
        b = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3], name=names[1])
        tf.identity(a * 2.0 + b, name="out")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def test_missing_model_file_fails_at_parse(workdir):
    workdir.write_config(tiny_config({"ext": tiny_model(source="pb", path="models/nope.pb")}))
    proc = workdir.snakemake("-n", check=False)
    assert proc.returncode != 0
    assert "models.ext.path: models/nope.pb does not exist" in proc.stdout + proc.stderr


def test_corrupt_pb(tmp_path):
    pb = tmp_path / "corrupt.pb"
    pb.write_bytes(b"\x00\xffthis is not a graph" * 10)
    out = tmp_path / "out" / "model.pb"
    proc = run_cli("export-pb", "--source", "pb", "--source-path", str(pb), "--out", str(out),
                   "--image-size", "64")  # fmt: skip
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "corrupt.pb: not a TensorFlow frozen GraphDef" in line and "fix:" in line
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_pb_with_two_inputs_and_no_names(tmp_path):
    pb = tmp_path / "two.pb"
    _two_input_pb(pb)
    out = tmp_path / "model.pb"
    proc = run_cli("export-pb", "--source", "pb", "--source-path", str(pb), "--out", str(out),
                   "--image-size", "64")  # fmt: skip
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "the graph has 2 inputs (a:0, b:0)" in line and "input_name" in line
    assert not out.exists()


def test_wrong_tensor_name_lists_the_real_ones(tmp_path):
    pb = tmp_path / "two.pb"
    _two_input_pb(pb)
    out = tmp_path / "model.pb"
    proc = run_cli("export-pb", "--source", "pb", "--source-path", str(pb), "--out", str(out),
                   "--image-size", "64", "--input-name", "images:0")  # fmt: skip
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "input tensor 'images:0' does not exist" in line and "a:0, b:0" in line
    assert not out.exists()


def test_opset_19_refused_by_cli(tmp_path):
    proc = run_cli("convert", "--pb", str(tmp_path / "x.pb"), "--out", str(tmp_path / "x.onnx"),
                   "--opset", "19")  # fmt: skip
    assert proc.returncode == 1
    assert "opset 19 is not supported" in _error_line(proc.stderr)


def test_unknown_patch_refused_by_cli(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"")
    proc = run_cli("patch", "--onnx", str(src), "--out", str(tmp_path / "p.onnx"),
                   "--image-size", "64", "--recipe", "nchw_input,fold_everything")  # fmt: skip
    assert proc.returncode == 1
    assert "unknown patch 'fold_everything'" in _error_line(proc.stderr)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.slow
def test_corrupt_pb_in_workflow_leaves_earlier_artifacts_untouched(workdir):
    """A good model is built; adding a corrupt pb model fails the run, and only that job."""
    workdir.write_config(tiny_config({"good": tiny_model()}))
    workdir.snakemake("results/pb/good/64/model.pb")
    good = workdir.path / "results/pb/good/64/model.pb"
    before = (good.stat().st_mtime_ns, good.read_bytes())
    (workdir.path / "models").mkdir()
    (workdir.path / "models/bad.pb").write_bytes(np.random.default_rng(0).bytes(512))
    workdir.write_config(
        tiny_config({"good": tiny_model(), "bad": tiny_model(source="pb", path="models/bad.pb")})
    )
    proc = workdir.snakemake("pb", check=False)
    assert proc.returncode != 0
    log = (workdir.path / "logs/export_pb/bad/64.log").read_text()
    assert "models/bad.pb: not a TensorFlow frozen GraphDef" in log
    assert not (workdir.path / "results/pb/bad/64/model.pb").exists()
    assert (good.stat().st_mtime_ns, good.read_bytes()) == before
