"""A table of bad inputs, each run as a user runs it (the CLI, ``--log`` as a job log).

Every case must: exit non-zero; print exactly one ``ERROR`` line naming the problem and a fix;
leave a non-empty log with that line; write no artifact (no temporaries either); and leave an
earlier artifact at the output path byte-identical. ``test_disk_full`` holds the cases whose
disk really fills (a tiny tmpfs, where it can be mounted).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from int8_models import SIZE, tiny_detector, write_images

REPO = Path(__file__).resolve().parent.parent
EARLIER = b"an earlier, good artifact\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    tiny_detector(d / "model.onnx")
    (d / "garbage.bin").write_bytes(np.random.default_rng(0).bytes(300))
    (d / "empty").mkdir()
    (d / "a_file").write_text("not a folder")
    (d / "sm_novars").mkdir()
    (d / "sm_novars" / "saved_model.pb").write_bytes(b"\x08\x01")  # no variables/ beside it
    (d / "calib.npy").parent.mkdir(exist_ok=True)
    np.save(d / "calib.npy", np.zeros((2, 3, SIZE, SIZE), np.float32))
    np.save(d / "wrong_shape.npy", np.zeros((2, 5), np.float32))
    write_images(d / "images", 3)
    (d / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "ranges.json").write_text('{"ranges": {"x": [0, 1]}, "float_tensors": []}')
    (d / "bad_ranges.json").write_text("{not json")
    for name, text in {
        "dup.yaml": "models:\n  a: {source: builtin}\n  a: {source: builtin}\n",
        "tab.yaml": "models:\n\ta: {source: builtin}\n",
        "unknown.yaml": "models:\n  a: {source: builtin}\ncolour: blue\n",
        "batch.yaml": "models:\n  a: {source: builtin, batch: four}\n",
        "profiles.yaml": "models: {a: {}}\nengine: {dynamic_profiles: [{min: 4, opt: 2, max: 8}]}",
        "sizes.yaml": "models:\n  a: {source: builtin, image_sizes: [300]}\n",
        "opset.yaml": "models: {a: {}}\nonnx: {opset: 19}\n",
        "precision.yaml": "models: {a: {}}\nprecisions: [fp8]\n",
        "targets.yaml": "models: {a: {}}\ntargets:\n  gpu: {tensorrt: '10.3', device: RTX}\n",
    }.items():
        (d / name).write_text(text)
    return d


# (case, argv with {d} = inputs and {out} = the output path, words the error line must hold)
CASES = [
    ("pb corrupt", ["export-pb", "--source", "pb", "--source-path", "{d}/garbage.bin",
                    "--out", "{out}", "--image-size", "64"], ["not a TensorFlow frozen GraphDef"]),
    ("pb missing", ["export-pb", "--source", "pb", "--source-path", "{d}/nope.pb", "--out", "{out}",
                    "--image-size", "64"], ["nope.pb"]),
    ("pb is a dir", ["export-pb", "--source", "pb", "--source-path", "{d}/empty", "--out", "{out}",
                     "--image-size", "64"], ["empty is a directory, not a frozen .pb",
                                             "source: saved_model"]),
    ("saved model dir empty", ["export-pb", "--source", "saved_model", "--source-path",
                               "{d}/empty", "--out", "{out}", "--image-size", "64"], ["empty"]),
    ("saved model without variables", ["export-pb", "--source", "saved_model", "--source-path",
                                       "{d}/sm_novars", "--out", "{out}"],
     ["no variables/ folder", "copy the whole SavedModel directory"]),
    ("keras weights missing", ["export-saved-model", "--out", "{out}", "--source", "keras",
                               "--path", "{d}/nope.keras", "--image-size", "64"], ["nope.keras"]),
    ("convert opset 19", ["convert", "--pb", "{d}/garbage.bin", "--out", "{out}", "--opset", "19"],
     ["opset 19 is not supported"]),
    ("convert missing pb", ["convert", "--pb", "{d}/nope.pb", "--out", "{out}",
                            "--input-name", "x:0", "--output-name", "y:0"], ["nope.pb"]),
    ("convert garbage pb", ["convert", "--pb", "{d}/garbage.bin", "--out", "{out}",
                            "--input-name", "x:0", "--output-name", "y:0"], ["garbage.bin"]),
    ("patch unknown patch", ["patch", "--onnx", "{d}/model.onnx", "--out", "{out}",
                             "--image-size", "64", "--recipe", "nchw_input,fold_everything"],
     ["unknown patch 'fold_everything'"]),
    ("patch missing onnx", ["patch", "--onnx", "{d}/nope.onnx", "--out", "{out}",
                            "--image-size", "64"], ["nope.onnx"]),
    ("patch garbage onnx", ["patch", "--onnx", "{d}/garbage.bin", "--out", "{out}",
                            "--image-size", "64"], ["garbage.bin"]),
    ("benchmark missing onnx", ["benchmark", "--onnx", "{d}/nope.onnx", "--out", "{out}"],
     ["nope.onnx"]),
    ("benchmark garbage onnx", ["benchmark", "--onnx", "{d}/garbage.bin", "--out", "{out}"],
     ["garbage.bin"]),
    ("out under a file", ["benchmark", "--onnx", "{d}/model.onnx", "--out", "{d}/a_file/b1.json"],
     ["a_file"]),
    ("calibrate missing folder", ["calibrate", "--images", "{d}/nope", "--out", "{out}",
                                  "--holdout-out", "{out}.holdout.npy", "--image-size", "64"],
     ["nope"]),
    ("calibrate empty folder", ["calibrate", "--images", "{d}/empty", "--out", "{out}",
                                "--holdout-out", "{out}.holdout.npy", "--image-size", "64"],
     ["empty"]),
    ("calibrate too few images", ["calibrate", "--images", "{d}/images", "--out", "{out}",
                                  "--holdout-out", "{out}.holdout.npy", "--image-size", "64",
                                  "--count", "20", "--holdout", "20"], ["images"]),
    ("quantize missing calib", ["quantize", "--onnx", "{d}/model.onnx", "--calib", "{d}/nope.npy",
                                "--out", "{out}", "--ranges-out", "{out}.ranges.json"],
     ["nope.npy"]),
    ("quantize wrong calib shape", ["quantize", "--onnx", "{d}/model.onnx", "--calib",
                                    "{d}/wrong_shape.npy", "--out", "{out}", "--ranges-out",
                                    "{out}.ranges.json"], ["wrong_shape.npy"]),
    ("trt cache bad version", ["trt-cache", "--ranges", "{d}/ranges.json", "--out", "{out}",
                               "--trt-version", "eight"], ["eight"]),
    ("trt cache bad ranges", ["trt-cache", "--ranges", "{d}/bad_ranges.json", "--out", "{out}",
                              "--trt-version", "8.6.1"], ["bad_ranges.json"]),
    ("gate missing holdout", ["int8-gate", "--fp32", "{d}/model.onnx", "--int8", "{d}/model.onnx",
                              "--holdout", "{d}/nope.npy", "--out", "{out}"], ["nope.npy"]),
    ("int8 bench missing model", ["benchmark-int8", "--fp32", "{d}/model.onnx", "--int8",
                                  "{d}/nope.onnx", "--out", "{out}"], ["nope.onnx"]),
    ("config duplicate key", ["validate-config", "{d}/dup.yaml"],
     ["line 3: duplicate key 'a' (first given at line 2)"]),
    ("config tab", ["validate-config", "{d}/tab.yaml"], ["line 2, column 1", "spaces"]),
    ("config unknown key", ["validate-config", "{d}/unknown.yaml"], ["unknown key 'colour'"]),
    ("config batch four", ["validate-config", "{d}/batch.yaml"],
     ["models.a.batch: 'four' is not valid", "dynamic or an integer"]),
    ("config profile order", ["validate-config", "{d}/profiles.yaml"], ["min <= opt <= max"]),
    ("config image size", ["validate-config", "{d}/sizes.yaml"], ["300 is not a multiple of 32"]),
    ("config opset", ["validate-config", "{d}/opset.yaml"], ["onnx.opset"]),
    ("config precision", ["validate-config", "{d}/precision.yaml"], ["'fp8' is not allowed"]),
    ("config missing", ["validate-config", "{d}/nope.yaml"], ["config file not found"]),
    ("config is a dir", ["validate-config", "{d}/empty"], ["config file is a directory"]),
    ("engine unknown target", ["build-engine", "--config", "{d}/targets.yaml", "--target",
                               "nope", "--onnx", "{d}/model.onnx", "--out", "{out}",
                               "--image-size", "64"], ["unknown target 'nope' (configured: gpu)"]),
    ("engine missing onnx", ["build-engine", "--config", "{d}/targets.yaml", "--target", "gpu",
                             "--onnx", "{d}/nope.onnx", "--out", "{out}", "--image-size", "64"],
     ["nope.onnx"]),
]  # fmt: skip


@pytest.mark.parametrize("case,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(inputs, tmp_path, case, argv, words):
    out = tmp_path / "results" / "artifact.out"
    out.parent.mkdir()
    check_one_clear_failure(inputs, tmp_path, out, argv, words)


def check_one_clear_failure(inputs: Path, tmp_path: Path, out: Path, argv, words) -> None:
    """Run the CLI as a job would and check the table's contract (module docstring)."""
    out.write_bytes(EARLIER)  # an earlier good artifact at the same path
    log = tmp_path / "logs" / "job.log"
    args = [a.format(d=inputs, out=out) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "trtflow", "--log", str(log), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "fix:" in errors[0], errors[0]
    for w in words:
        assert w.format(out=out) in errors[0], errors[0]
    text = log.read_text()
    assert errors[0].split(" ERROR ", 1)[1] in text
    assert out.read_bytes() == EARLIER
    left = [p.name for p in out.parent.iterdir() if p.name != out.name]
    assert not left, left  # no partial artifact, no temporary


@pytest.fixture
def full_disk(tmp_path):
    """``tmp_path/results`` on a 64 KiB tmpfs: a real disk that fills (root and a working
    ``mount`` only; elsewhere the test is skipped with the reason)."""
    import os

    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(results)],
                           capture_output=True, text=True)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {mount.stderr.strip()}")
    try:
        yield results
    finally:
        subprocess.run(["umount", str(results)], check=True)


@pytest.fixture(scope="module")
def wide_pb(inputs):
    """A frozen pb with 1.2 MB of weights, so its ONNX cannot fit the 64 KiB disk."""
    from pb_factory import classifier_pb

    return classifier_pb(inputs / "wide.pb", 32, classes=100_000)


# (case, argv, words): the disk fills while the stage writes its artifact ({out}).
DISK_FULL = [
    ("convert, disk full", ["convert", "--pb", "{d}/wide.pb", "--out", "{out}", "--input-name",
                            "x:0", "--output-name", "Identity:0"],
     ["disk full: writing {out} failed (No space left on device, after", "free of 0.1 MB",
      "free disk space"]),
    # TensorFlow's own writer (SaveV2): ResourceExhaustedError, the path only in its message
    ("export saved model, disk full", ["export-saved-model", "--out", "{out}", "--variant", "n",
                                       "--image-size", "32", "--classes", "1"],
     ["disk full: writing {out} failed (No space left on device, after", "free disk space"]),
]  # fmt: skip


@pytest.mark.parametrize("case,argv,words", DISK_FULL, ids=[c[0] for c in DISK_FULL])
def test_disk_full(inputs, wide_pb, full_disk, tmp_path, case, argv, words):
    check_one_clear_failure(inputs, tmp_path, full_disk / "artifact.out", argv, words)
