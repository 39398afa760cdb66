"""Training stage: the built-in labelled set, YOLO/COCO readers, target assignment, a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from trtflow.core.errors import TrtflowError
from trtflow.images import augment
from trtflow.images.datasets import read_split, read_yolo, shapes_image
from trtflow.stages.train import make_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    make_dataset(root, train_count=16, val_count=4, seed=3, workers=2)
    return root


def test_dataset_is_deterministic_and_labels_round_trip(shapes):
    samples = read_split(shapes / "images" / "train", num_classes=8)
    assert len(samples) == 16 and sum(len(s.classes) for s in samples) > 16
    for i, s in enumerate(samples[:4]):
        rgb, boxes, classes = shapes_image(3, "train", i)
        assert np.abs(s.boxes - boxes).max() < 1e-3 * max(rgb.shape)  # 6-digit YOLO text
        assert (s.classes == classes).all()
        # the shape's pixels fill its box: every edge row/column differs from the background
        assert (boxes[:, 2:] > boxes[:, :2]).all()
    coco = read_split(shapes / "val.json", num_classes=8)
    yolo = read_split(shapes / "images" / "val", num_classes=8)
    assert [s.path.name for s in coco] == [s.path.name for s in yolo]
    for c, y in zip(coco, yolo, strict=True):
        assert np.abs(c.boxes - y.boxes).max() < 0.5 and (c.classes == y.classes).all()
    assert not np.array_equal(shapes_image(3, "val", 0)[0],
                              shapes_image(4, "val", 0)[0])  # fmt: skip


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("0 0.5 0.5 0.2", "has 4 fields"),
        ("x 0.5 0.5 0.2 0.2", "not a number"),
        ("9 0.5 0.5 0.2 0.2", "has class 9, expected an integer in 0..7"),
        ("1.5 0.5 0.5 0.2 0.2", "expected an integer"),
        ("0 1.5 0.5 0.2 0.2", "outside 0-1"),
        ("0 0.5 0.5 0 0.2", "zero width"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, line, problem):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.jpg")
    label = tmp_path / "labels" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(TrtflowError) as exc:
        read_yolo(tmp_path / "images", num_classes=8)
    msg = str(exc.value)
    assert f"label file {label} line 3 " in msg and problem in msg, msg


def test_train_cli_stops_on_bad_label_with_one_line(shapes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    bad = sorted((data / "labels" / "train").iterdir())[5]
    bad.write_text(bad.read_text() + "3 0.5 0.5\n")
    out = tmp_path / "w" / "m.weights.h5"
    proc = run_cli("train", "--train-data", str(data / "images" / "train"), "--val-data",
                   str(data / "images" / "val"), "--out", str(out), "--image-size", "64",
                   "--batch", "4", "--epochs", "1")  # fmt: skip
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, proc.stderr[-2000:]
    n = len(bad.read_text().splitlines())
    assert f"label file {bad} line {n} has 3 fields" in errors[0]
    assert not out.exists()


def test_build_targets_centre_and_two_neighbours():
    # one 40x40 box centred at (98, 82) in a 128 image: at stride 8 the centre is (12.25, 10.25)
    lab = [np.array([[2, 78, 62, 118, 102]], np.float64)]
    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    t8, t16, t32 = augment.build_targets(lab, 128, anchors, [8, 16, 32], anchor_t=4.0)
    # stride 8: 5x5 grid units; anchor 0 (1.25 x 1.63) is exactly 4x too narrow -> not matched
    assert set(np.argwhere(t8[0, ..., 0] > 0)[:, 2]) == {1, 2}
    cells = {tuple(c) for c in np.argwhere(t8[0, ..., 1, 0] > 0)}
    # fractions 0.25 < 0.5: the left (x 11) and upper (y 9) neighbours join the centre (12, 10)
    assert cells == {(10, 12), (10, 11), (9, 12)}
    assert np.allclose(t8[0, 10, 12, 1, 1:6], [0.25, 0.25, 5, 5, 2])
    assert np.allclose(t8[0, 10, 11, 1, 1:3], [1.25, 0.25])  # offset from the neighbour cell
    assert np.allclose(t8[0, 9, 12, 1, 1:3], [0.25, 1.25])
    # stride 32: 1.25 grid units, within 4x of anchor 0 (3.6 x 2.8) only
    assert set(np.argwhere(t32[0, ..., 0] > 0)[:, 2]) == {0}
    assert t16[0, ..., 0].sum() > 0


def test_tiny_training_loss_falls_and_resumes(shapes, tmp_path):
    """Eight epochs of two steps on 16 small images (no augmentation, no warm-up): the loss
    falls; killed after epoch 4, a rerun with the same arguments resumes there and finishes;
    the weights load into the builtin model."""
    from trtflow.stages.train import train_yolov5
    from trtflow.tf.yolov5 import build_yolov5

    out = tmp_path / "w" / "tiny.weights.h5"
    ckpt = tmp_path / "resume.npz"
    still = {
        "mosaic": 0.0,
        "scale": 0.0,
        "translate": 0.0,
        "fliplr": 0.0,
        "hsv_h": 0.0,
        "hsv_s": 0.0,
        "hsv_v": 0.0,
        "warmup_epochs": 0.0,
    }  # the same 16 images each epoch
    args = dict(variant="n", classes=8, image_size=64, epochs=8, batch=8, seed=0, workers=2,
                val_count=4, val_interval=100, checkpoint=ckpt, hyp=still)  # fmt: skip
    seen = []

    def kill_after_fourth(model, row):
        seen.append(row)
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    train, val = shapes / "images" / "train", shapes / "images" / "val"
    with pytest.raises(KeyboardInterrupt):
        train_yolov5(train, val, out, **args, on_epoch=kill_after_fourth)
    assert ckpt.is_file() and not out.exists() and len(seen) == 4
    report = train_yolov5(train, val, out, **args)
    hist = report["history"]
    assert [r["epoch"] for r in hist] == list(range(8))
    assert hist[:4] == seen  # restored from the checkpoint, not retrained
    first, last = (sum(r[k] for k in ("box", "obj", "cls")) for r in (hist[0], hist[-1]))
    assert last < 0.8 * first, hist
    assert hist[-1]["map50"] is not None and hist[0]["map50"] is None
    assert out.is_file() and not ckpt.exists()
    model = build_yolov5("n", 8, 64, weights=str(out))
    assert model.output.shape[-1] == 13
    json.dumps(report)  # the manifest's history is plain JSON


@pytest.mark.slow
def test_gate_measures_map_against_the_builtin_labels(tmp_path):
    """int8.gate.builtin_labels: the gate reads the built-in val split (generated by
    make_dataset) and reports fp32 and INT8 mAP@.5 and mAP@.5:.95; the summary has them."""
    import yaml
    from int8_models import write_images
    from test_int8_workflow import _run, _workdir

    from trtflow.reporting.summary import collect_rows

    write_images(tmp_path / "imgs", 6)
    wd = _workdir(tmp_path / "wd", str(tmp_path / "imgs"))
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["int8"]["gate"].update(builtin_labels=True, max_map50_drop=1.0, max_map_drop=1.0)
    cfg["dataset"] = {"train_count": 1, "val_count": 3}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    gate = wd / "results/int8_gate/toy/64/gate.json"
    r = _run(wd, str(gate.relative_to(wd)))
    assert r.returncode == 0, r.stdout + r.stderr
    labelled = json.loads(gate.read_text())["labelled"]
    assert labelled["count"] == 3 and labelled["annotations"].endswith("builtin/val.json")
    for key in ("map50_fp32", "map50_int8", "map_fp32", "map_int8"):
        assert 0.0 <= labelled[key] <= 1.0
    assert labelled["max_map50_drop"] == 1.0
    (row,) = collect_rows([], [], [], [], [], int8_gate=[str(gate)])
    assert row["map50_fp32"] == round(labelled["map50_fp32"], 3)
    assert row["map50_95_int8"] == round(labelled["map_int8"], 3)
