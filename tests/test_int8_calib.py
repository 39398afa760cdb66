"""Calibration data: YOLOv5 letterbox, sampling, arrays, and one clear error for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from int8_models import write_images

from trtflow.core.errors import TrtflowError
from trtflow.images.io import letterbox, list_images, load_rgb, preprocess, resize_linear
from trtflow.stages.quantize import make_calibration_data, make_sample_images

REPO = Path(__file__).resolve().parent.parent


def test_resize_matches_opencv_inter_linear():
    # cv2.resize(np.array([[0, 255]], np.uint8), (4, 1), interpolation=cv2.INTER_LINEAR)
    img = np.array([[0, 255]], np.uint8)[..., None].repeat(3, axis=2)
    out = resize_linear(img, 1, 4)
    assert out[0, :, 0].tolist() == [0, 64, 191, 255]
    # downscaling by 2 averages pixel pairs (half-pixel centres, no antialias beyond that)
    img = np.array([[0, 100, 200, 250]], np.uint8)[..., None].repeat(3, axis=2)
    assert resize_linear(img, 1, 2)[0, :, 0].tolist() == [50, 225]


def test_letterbox_like_yolov5():
    img = np.full((480, 640, 3), 7, np.uint8)
    out, r, (dw, dh) = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.1)
    assert (dw, dh) == (0.0, 8.0)
    assert (out[:8] == 114).all() and (out[-8:] == 114).all()
    assert (out[8:-8] == 7).all()
    # odd padding: YOLOv5 puts round(dh - 0.1) on top and round(dh + 0.1) at the bottom
    out, r, (dw, dh) = letterbox(np.zeros((10, 64, 3), np.uint8), 64)
    assert dh == 27.0 and (out[:27] == 114).all() and (out[37:] == 114).all()
    out, _, (dw, dh) = letterbox(np.zeros((64, 33, 3), np.uint8), 64)
    assert dw == 15.5 and (out[:, :15] == 114).all() and (out[:, 48:] == 114).all()
    assert (out[:, 15:48] == 0).all()


def test_preprocess_is_nchw_rgb_unit_range(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    x, r, pad = preprocess(load_rgb(tmp_path / "red.png"), 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert x[0, 16, 16] == 1.0 and x[1, 16, 16] == 0.0 and x[2, 16, 16] == 0.0
    assert x[:, 0, 0].tolist() == pytest.approx([114 / 255] * 3)


def test_load_rgb_grey_and_rgba(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((5, 6), 9, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.full((5, 6, 4), 9, np.uint8), "RGBA").save(tmp_path / "a.png")
    for name in ("g.png", "a.png"):
        arr = load_rgb(tmp_path / name)
        assert arr.shape == (5, 6, 3) and arr.dtype == np.uint8


def test_calibration_data_split_and_determinism(tmp_path):
    write_images(tmp_path / "imgs", 7)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")

    def run(tag, seed, sampling="random"):
        out = tmp_path / tag
        m = make_calibration_data(
            tmp_path / "imgs", out / "calib.npy", out / "holdout.npy", 32, 4, 2, seed, sampling
        )
        return np.load(out / "calib.npy"), np.load(out / "holdout.npy"), m

    c1, h1, m1 = run("a", 0)
    c2, h2, _ = run("b", 0)
    c3, _, m3 = run("c", 1)
    assert c1.shape == (4, 3, 32, 32) and h1.shape == (2, 3, 32, 32) and c1.dtype == np.float32
    assert 0.0 <= c1.min() and c1.max() <= 1.0
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(h1, h2)
    names = [d["file"] for d in m1["calibration_images"]]
    held = [d["file"] for d in m1["holdout_images"]]
    assert not set(names) & set(held) and len(set(names + held)) == 6
    assert m1["images_found"] == 7  # the .txt is ignored
    assert names != [d["file"] for d in m3["calibration_images"]]
    _, _, ms = run("d", 0, "sorted")
    expected = ["img_000.jpg", "img_001.png", "img_002.jpg", "img_003.png"]
    assert [d["file"] for d in ms["calibration_images"]] == expected
    manifest = json.loads((tmp_path / "a" / "calib.npy.manifest.json").read_text())
    assert manifest["options"]["image_size"] == 32


def _outputs(tmp_path):
    return tmp_path / "out" / "calib.npy", tmp_path / "out" / "holdout.npy"


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "does not exist"),
        ("empty", "has no JPEG/PNG images"),
        ("unreadable", "cannot be read"),
        ("too_few", "need 6"),
    ],
)
def test_bad_calibration_input_is_one_clear_error(tmp_path, case, needle):
    folder = tmp_path / "imgs"
    if case != "missing":
        folder.mkdir()
    if case == "empty":
        (folder / "readme.txt").write_text("no images here")
    if case == "unreadable":
        write_images(folder, 6)
        (folder / "img_002.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    if case == "too_few":
        write_images(folder, 5)
    c, h = _outputs(tmp_path)
    with pytest.raises(TrtflowError) as err:
        make_calibration_data(folder, c, h, 32, count=4, holdout=2, sampling="sorted")
    msg = str(err.value)
    assert needle in msg and "fix:" in msg
    assert str(folder) in msg
    if case == "unreadable":
        assert "img_002.jpg" in msg
    assert not c.exists() and not h.exists()
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_cli_bad_folder_exits_nonzero_with_one_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    out = tmp_path / "calib.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "trtflow", "calibrate", "--images", str(tmp_path / "imgs"),
         "--out", str(out), "--holdout-out", str(tmp_path / "h.npy"), "--image-size", "32"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "ERROR" in last and str(tmp_path / "imgs") in last and "fix:" in last
    assert not out.exists()


def test_sample_images_are_deterministic_and_loadable(tmp_path):
    make_sample_images(tmp_path / "a", 4, seed=3)
    make_sample_images(tmp_path / "b", 4, seed=3)
    files = list_images(tmp_path / "a")
    assert [f.suffix for f in files] == [".jpg", ".jpg", ".png", ".jpg"]
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
        img = load_rgb(f)
        assert img.ndim == 3 and img.std() > 5  # a scene, not a flat colour
