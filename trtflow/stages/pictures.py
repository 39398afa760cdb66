"""Stage "pictures" (convert host): labelled validation images with each artifact's detections.

For the first ``count`` images of a COCO-format labelled set (by default the built-in shapes
set's validation split) one PNG per image: four panels side by side — the labels, then the
detections of TF (the frozen model.pb), of the fp32 ONNX and of the INT8 Q/DQ ONNX (ONNX Runtime
CPU), each post-processed like the INT8 gate (score >= ``score_threshold``, class-aware NMS) and
mapped back through the letterbox onto the original image. Needs Pillow, TensorFlow, ONNX
Runtime and pycocotools (imported lazily).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.commands import report_command
from trtflow.core.manifest import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


#: One colour per class (cycled), readable on light and dark backgrounds.
PALETTE = [
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
    (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
    (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
]  # fmt: skip


def _panel(rgb: np.ndarray, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray | None,
           title: str, names: list[str]) -> Any:  # fmt: skip
    """The image with boxes, class names (and scores) drawn, a title bar on top."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    bar = 14
    out = Image.new("RGB", (im.width, im.height + bar), (0, 0, 0))
    out.paste(im, (0, bar))
    d = ImageDraw.Draw(out)
    d.text((3, 1), f"{title} ({len(boxes)})", fill=(255, 255, 255))
    for i, (b, c) in enumerate(zip(boxes, classes, strict=True)):
        colour = PALETTE[int(c) % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in b)
        d.rectangle([x0, y0 + bar, x1, y1 + bar], outline=colour, width=2)
        name = names[int(c)] if int(c) < len(names) else str(int(c))
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        d.text((x0 + 2, y0 + bar + 1), text, fill=colour)
    return out


def render_pictures(
    pb: str | Path,
    pb_manifest: str | Path,
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    images: str | Path,
    annotations: str | Path,
    out_dir: str | Path,
    image_size: int,
    count: int = 4,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    threads: int = 0,
) -> dict[str, Any]:
    """Write ``out_dir/val_<id>.png`` for the first ``count`` labelled images (atomically)."""
    arguments = dict(locals())  # for the report's command
    from PIL import Image

    from trtflow.images.detections import postprocess, split_outputs
    from trtflow.images.io import load_rgb
    from trtflow.quant.accuracy import _labelled_set, exact_runner
    from trtflow.tf.graph import FrozenGraphRunner

    started = time.time()
    gt, used, x, cats = _labelled_set(images, annotations, image_size, count)
    io = read_json(pb_manifest)["io"]
    tf_run = FrozenGraphRunner(pb, io["input_name"], io["output_name"])
    outputs = {
        "TF": [tf_run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))],
        "ONNX fp32": exact_runner(fp32_onnx, threads)(x),
        "ONNX INT8": exact_runner(int8_onnx, threads)(x),
    }
    names = [c.get("name", str(c["id"])) for c in gt.loadCats(cats)]
    pp = {"score_threshold": score_threshold, "top_k": 0, "iou_threshold": iou_threshold}
    counts: dict[str, list[int]] = {k: [] for k in outputs}
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True)
        for i, im in enumerate(used):
            rgb = load_rgb(Path(images) / im["file"])
            anns = gt.loadAnns(gt.getAnnIds(imgIds=[im["id"]], iscrowd=False))
            lab = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            lab[:, 2:] += lab[:, :2]
            lab_cls = np.array([cats.index(a["category_id"]) for a in anns], np.int64)
            panels = [_panel(rgb, lab, lab_cls, None, "labels", names)]
            for title, out in outputs.items():
                boxes, scores = split_outputs([o[i : i + 1] for o in out])
                det = postprocess(boxes[0], scores[0], **pp)
                pw, ph = im["pad"]
                b = (det["boxes"] - [pw, ph, pw, ph]) / im["ratio"]
                counts[title].append(len(b))
                panels.append(_panel(rgb, b, det["classes"], det["scores"], title, names))
            sheet = Image.new("RGB", (sum(p.width for p in panels), panels[0].height))
            for k, p in enumerate(panels):
                sheet.paste(p, (sum(q.width for q in panels[:k]), 0))
            sheet.save(tmp / f"val_{im['id']:06d}.png")
        report = {"stage": "render_pictures", "images": [im["file"] for im in used],
                  "detections": counts, "score_threshold": score_threshold,
                  "pb": str(pb), "fp32": str(fp32_onnx), "int8": str(int8_onnx),
                  "seconds": round(time.time() - started, 3),
                  "command": report_command("pictures", arguments)}  # fmt: skip
        write_json(tmp / "pictures.json", report)
    log.info("%d pictures (labels | TF | ONNX fp32 | ONNX INT8) -> %s", len(used), out_dir)
    return report
