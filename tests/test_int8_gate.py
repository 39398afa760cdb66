"""INT8 accuracy gate: numpy post-processing, pycocotools agreement, floors, labelled mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from int8_models import SIZE, tiny_detector, write_images

from trtflow.core.errors import TrtflowError
from trtflow.images.detections import coco_map, nms, postprocess, recall_at, split_outputs
from trtflow.quant.accuracy import exact_runner
from trtflow.stages.quantize import check_int8_accuracy


def test_nms_keeps_best_of_overlaps_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45).tolist() == [0, 2]
    assert nms(boxes, np.array([0.7, 0.8, 0.9]), 0.45).tolist() == [2, 1]
    # the same two boxes in different classes both survive class-aware post-processing
    xywh = np.array([[5, 5, 10, 10], [6, 6, 10, 10]], float)
    scores = np.array([[0.9, 0.0], [0.0, 0.8]])
    det = postprocess(xywh, scores, score_threshold=0.5, top_k=1)
    assert det["classes"].tolist() == [0, 1] and det["boxes"][0].tolist() == [0, 0, 10, 10]


def test_postprocess_threshold_top_k_and_min_wh():
    xywh = np.array([[10, 10, 4, 4], [30, 30, 4, 4], [50, 50, 1, 9], [70, 70, 4, 4]], float)
    scores = np.array([[0.9], [0.01], [0.95], [0.02]])
    # box 2 is narrower than min_wh; threshold keeps one, top_k tops it up to two
    det = postprocess(xywh, scores, score_threshold=0.5, top_k=2)
    assert det["scores"].tolist() == [0.9, 0.02]
    det = postprocess(xywh, scores, score_threshold=0.0, top_k=1, max_detections=2)
    assert len(det["scores"]) == 2


def _dets(boxes, classes, scores=None):
    boxes = np.asarray(boxes, float)
    n = len(boxes)
    scores = np.asarray(scores if scores is not None else np.linspace(1, 0.5, n))
    return {"boxes": boxes, "classes": np.asarray(classes), "scores": scores}


def test_coco_map_identity_shift_and_wrong_class():
    ref = [_dets([[0, 0, 20, 20], [30, 30, 60, 50]], [0, 1])]
    assert coco_map(ref, ref, 2)["map50_95"] == pytest.approx(1.0)
    shifted = [_dets([[3, 3, 23, 23], [33, 33, 63, 53]], [0, 1])]
    m = coco_map(ref, shifted, 2)
    assert m["map50"] == pytest.approx(1.0) and m["map50_95"] < 0.8
    assert coco_map(ref, [_dets([[0, 0, 20, 20], [30, 30, 60, 50]], [1, 0])], 2)["map50"] == 0
    assert recall_at(ref, shifted) == 1.0
    with pytest.raises(TrtflowError, match="no detections"):
        coco_map([_dets(np.zeros((0, 4)), [])], ref, 2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from trtflow.stages.quantize import quantize_onnx

    d = tmp_path_factory.mktemp("gate")
    tiny_detector(d / "fp32.onnx")
    tiny_detector(d / "other.onnx", seed=5)  # different weights: what a broken INT8 looks like
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.random((6, 3, SIZE, SIZE), dtype=np.float32))
    np.save(d / "holdout.npy", rng.random((4, 3, SIZE, SIZE), dtype=np.float32))
    quantize_onnx(d / "fp32.onnx", d / "calib.npy", d / "int8.onnx", d / "r.json")
    return d


def test_gate_passes_good_int8_and_reports(models):
    d = models
    r = check_int8_accuracy(d / "fp32.onnx", d / "int8.onnx", d / "holdout.npy",
                                 d / "gate.json", min_map50_vs_fp32=0.5)  # fmt: skip
    saved = json.loads((d / "gate.json").read_text())
    assert saved["ok"] and saved["map50_vs_fp32"] == r["map50_vs_fp32"] >= 0.5
    assert set(saved["errors"]) == {"boxes_px", "scores"}
    assert saved["detections_per_image_fp32"] >= 50
    same = check_int8_accuracy(d / "fp32.onnx", d / "fp32.onnx", d / "holdout.npy",
                                    d / "same.json")  # fmt: skip
    assert same["map_vs_fp32"] == pytest.approx(1.0) and same["errors"]["scores"]["max_abs"] == 0


def test_gate_fails_below_floor_without_writing(models):
    d = models
    with pytest.raises(TrtflowError, match="min_map50_vs_fp32") as err:
        check_int8_accuracy(d / "fp32.onnx", d / "other.onnx", d / "holdout.npy",
                                 d / "bad.json", min_map50_vs_fp32=0.5)  # fmt: skip
    assert "fix:" in str(err.value)
    assert not (d / "bad.json").exists()


def test_labelled_coco_set(models, tmp_path):
    """Ground truth = fp32's own detections mapped back to the original image: fp32 mAP is 1."""
    from trtflow.images.io import load_rgb, preprocess

    d = models
    files = write_images(tmp_path / "coco", 3)
    fp32 = exact_runner(d / "fp32.onnx")
    images, anns = [], []
    for i, f in enumerate(files):
        rgb = load_rgb(f)
        x, r, (pw, ph) = preprocess(rgb, SIZE)
        b, s = split_outputs(fp32(x[None]))
        det = postprocess(b[0], s[0], 0.25, 100, 0.45, 300)
        images.append({"id": i + 1, "file_name": f.name, "height": rgb.shape[0],
                       "width": rgb.shape[1]})  # fmt: skip
        for box, c in zip(det["boxes"], det["classes"], strict=True):
            x0, y0 = (box[0] - pw) / r, (box[1] - ph) / r
            w, h = (box[2] - box[0]) / r, (box[3] - box[1]) / r
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": [1, 3, 7][c],
                         "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    cats = [{"id": c, "name": str(c)} for c in (1, 3, 7)]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    r = check_int8_accuracy(d / "fp32.onnx", d / "int8.onnx", d / "holdout.npy",
                                 tmp_path / "g.json", min_map50_vs_fp32=0.0,
                                 eval_images=tmp_path / "coco", eval_annotations=ann_file,
                                 max_map_drop=1.0, max_map50_drop=1.0)  # fmt: skip
    lab = r["labelled"]
    assert lab["count"] == 3 and lab["map_fp32"] == pytest.approx(1.0, abs=0.02)
    assert 0.0 <= lab["map_int8"] <= lab["map_fp32"] + 1e-6
    with pytest.raises(TrtflowError, match="labelled mAP drops"):
        check_int8_accuracy(d / "fp32.onnx", d / "other.onnx", d / "holdout.npy",
                                 tmp_path / "g2.json", min_map50_vs_fp32=0.0,
                                 eval_images=tmp_path / "coco", eval_annotations=ann_file,
                                 max_map_drop=0.01)  # fmt: skip


def test_benchmark_int8_side_by_side(models, tmp_path):
    from trtflow.stages.quantize import benchmark_int8

    d = models
    r = benchmark_int8(d / "fp32.onnx", d / "int8.onnx", tmp_path / "b.json", 2, 1, 3, 1)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["batch"] == 2 and len(saved["latencies_ms"]["int8"]) == 3
    assert r["speedup"] == pytest.approx(r["fp32_p50_ms"] / r["int8_p50_ms"])
    # the CPU beside the timing, and the INT8 form timed is one whose kernels are exact here
    assert saved["cpu"]["model"] and "isa" in saved["cpu"]
    probes = saved["int8_kernel_probes"]
    assert saved["int8_form"] == ("u8" if probes["u8"]["exact"] else "s8")
    assert saved["comparable"] == probes[saved["int8_form"]]["exact"]


def test_int8_kernel_probe_matches_the_instruction_set():
    """ONNX Runtime's fused uint8 x int8 Conv saturates 16-bit pair sums without VNNI/AMX: the
    probe must see that (it is why the gate never uses those kernels)."""
    from trtflow.core.cpu import cpu_info
    from trtflow.quant.kernels import probe_int8_kernels

    u8 = probe_int8_kernels("u8")
    assert u8["fused"]  # the probe's Conv does reach the integer kernel
    if not cpu_info()["int8_dot"]:
        assert not u8["exact"] and u8["max_error_lsb"] > 1
    s8 = probe_int8_kernels("s8")
    if not s8["fused"]:  # a Conv run in float between Q/DQ pairs is exact
        assert s8["exact"]


def test_summary_int8_columns(tmp_path):
    from trtflow.reporting.summary import COLUMNS, collect_rows

    b = tmp_path / "results/benchmark_int8/toy/64/b1.json"
    g = tmp_path / "results/int8_gate/toy/64/gate.json"
    b.parent.mkdir(parents=True)
    g.parent.mkdir(parents=True)
    b.write_text(json.dumps({"batch": 1, "int8_p50_ms": 12.345, "fp32_p50_ms": 28.95,
                             "speedup": 2.345, "int8_form": "s8", "comparable": True}))  # fmt: skip
    g.write_text(json.dumps({"map50_vs_fp32": 0.87654}))
    rows = collect_rows([], [], [], [], [], int8_bench=[str(b)], int8_gate=[str(g)])
    assert {"cpu_int8_p50_ms", "int8_speedup", "int8_map_vs_fp32"} <= set(COLUMNS)
    assert rows[0]["cpu_int8_p50_ms"] == 12.35 and rows[0]["int8_speedup"] == 2.35
    assert rows[0]["int8_job_fp32_p50_ms"] == 28.95 and rows[0]["int8_cpu_form"] == "s8"
    assert rows[0]["int8_map_vs_fp32"] == 0.877
    b.write_text(json.dumps({"batch": 1, "int8_p50_ms": 1.0, "fp32_p50_ms": 2.0, "speedup": 2.0,
                             "int8_form": "u8", "comparable": False}))  # fmt: skip
    rows = collect_rows([], [], [], [], [], int8_bench=[str(b)])
    assert rows[0]["int8_speedup"].startswith("not comparable")


def test_speedup_benchmark_script_prints_table_and_checks_floor(models):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "int8_speedup.py"
    d = models
    argv = [sys.executable, str(script), "--fp32", str(d / "fp32.onnx"), "--int8",
            str(d / "int8.onnx"), "--threads", "1", "--batch", "1,2", "--warmup", "1",
            "--iterations", "3"]  # fmt: skip
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    rows = [line for line in ok.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 4 and sum("baseline" in r for r in rows) == 2, ok.stdout
    header = next(line for line in ok.stdout.splitlines() if line.startswith("| threads"))
    col = [c.strip() for c in header.split("|")].index("speedup (p50)")
    speedups = [float(r.split("|")[col].strip().rstrip("x")) for r in rows if "| int8 |" in r]
    assert len(speedups) == 2
    assert "CPU: " in ok.stdout and ("| s8 |" in ok.stdout or "| u8 |" in ok.stdout)
    assert all(s > 0 for s in speedups)
    assert f"worst {min(speedups):.2f}x" in ok.stdout
    assert "(thread spinning on)" in ok.stdout
    off = subprocess.run(argv + ["--batch", "1", "--no-spinning"], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert off.returncode == 0 and "(thread spinning off)" in off.stdout, off.stdout + off.stderr
    failed = subprocess.run(argv + ["--min-speedup", "1000"], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert failed.returncode == 1, failed.stdout
