"""Stage "int8_gate" (convert host): is the Q/DQ model still the fp32 model?

On the held-aside images (never calibrated on) both models run in ONNX Runtime and are compared:

* output error statistics (boxes in pixels, objectness, class scores);
* detection agreement: YOLOv5 post-processing in numpy (score = obj x cls, best class, top-k,
  class-aware NMS) on both, then COCO mAP (pycocotools) of the INT8 detections with the fp32
  detections as ground truth. The built-in models are untrained — their objectness is nearly
  constant, so a usual 0.25 score threshold keeps nothing. The default threshold is therefore 0
  and each image keeps its ``top_k`` highest-scoring candidates: the gate then measures whether
  INT8 keeps the same top-ranked boxes, classes and geometry as fp32;
* optionally real mAP of both against a labelled COCO-format set named in the config.

The stage fails (TrtflowError) below the configured floors, after writing nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.errors import TrtflowError
from trtflow.manifest import write_json

log = logging.getLogger(__name__)

#: Boxes narrower or lower than this many pixels are dropped (YOLOv5's min_wh).
MIN_WH = 2.0


# ---------------------------------------------------------------- post-processing
def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[..., 0] = b[..., 0] - b[..., 2] / 2
    out[..., 1] = b[..., 1] - b[..., 3] / 2
    out[..., 2] = b[..., 0] + b[..., 2] / 2
    out[..., 3] = b[..., 1] + b[..., 3] / 2
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a [N,4] and b [M,4]."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on xyxy boxes; indices kept, highest score first (like torchvision.ops.nms)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        iou = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    boxes_xywh: np.ndarray,
    scores: np.ndarray,
    score_threshold: float = 0.25,
    top_k: int = 100,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    min_wh: float = MIN_WH,
) -> dict[str, np.ndarray]:
    """One image: xywh [N,4] and class scores [N,C] (obj x cls) -> detections (xyxy, score, class).

    Like YOLOv5's non_max_suppression (multi_label=False, agnostic=False): boxes narrower than
    ``min_wh`` pixels dropped, best class per candidate, every candidate at or above
    ``score_threshold`` — and at least the ``top_k`` best, so a model whose scores are all low
    still yields candidates — then class-aware NMS (class offsets), ``max_detections`` kept.
    """
    cls = scores.argmax(axis=1)
    conf = scores[np.arange(len(scores)), cls]
    valid = np.nonzero((boxes_xywh[:, 2] >= min_wh) & (boxes_xywh[:, 3] >= min_wh))[0]
    order = valid[np.argsort(-conf[valid], kind="stable")]
    n = max(int(np.count_nonzero(conf[order] >= score_threshold)), min(top_k, len(order)))
    idx = order[:n]
    xyxy = xywh_to_xyxy(boxes_xywh[idx].astype(np.float64))
    offset = cls[idx, None].astype(np.float64) * 4096.0  # YOLOv5's max_wh class offset
    keep = nms(xyxy + offset, conf[idx], iou_threshold)[:max_detections]
    return {
        "boxes": xyxy[keep],
        "scores": conf[idx][keep].astype(np.float64),
        "classes": cls[idx][keep],
    }


def split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs -> (xywh [B,N,4], class scores obj x cls [B,N,C]).

    One output [B,N,5+C] (YOLOv5 export) or two outputs, boxes [B,N,4] and scores [B,N,C]
    (a graph whose EfficientNMS_TRT was detached).
    """
    if len(outputs) == 1 and outputs[0].ndim == 3 and outputs[0].shape[-1] >= 6:
        y = outputs[0]
        return y[..., :4], y[..., 4:5] * y[..., 5:]
    if len(outputs) == 2 and outputs[0].shape[-1] == 4:
        return outputs[0], outputs[1]
    shapes = [o.shape for o in outputs]
    raise TrtflowError(
        f"cannot read detections from outputs {shapes}",
        "the gate expects [B,N,5+C] (YOLOv5) or boxes [B,N,4] + scores [B,N,C]",
    )


# ---------------------------------------------------------------- mAP
def coco_map(
    references: list[dict[str, np.ndarray]],
    predictions: list[dict[str, np.ndarray]],
    num_classes: int,
    sizes: list[tuple[int, int]] | None = None,
    max_detections: int = 100,
) -> dict[str, float]:
    """COCO mAP@0.5:0.95 and mAP@0.5 of ``predictions`` against ``references`` as ground truth.

    Up to ``max_detections`` per image are evaluated (pycocotools' maxDets).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (ref, pred) in enumerate(zip(references, predictions, strict=True)):
        h, w = sizes[i] if sizes else (0, 0)
        images.append({"id": i + 1, "height": h, "width": w})
        for b, c in zip(ref["boxes"], ref["classes"], strict=True):
            wh = b[2:] - b[:2]
            bbox = [float(b[0]), float(b[1]), float(wh[0]), float(wh[1])]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "bbox": bbox,
                                "category_id": int(c) + 1, "area": bbox[2] * bbox[3],
                                "iscrowd": 0})  # fmt: skip
        for b, s, c in zip(pred["boxes"], pred["scores"], pred["classes"], strict=True):
            wh = b[2:] - b[:2]
            bbox = [float(b[0]), float(b[1]), float(wh[0]), float(wh[1])]
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": bbox,
                            "score": float(s)})  # fmt: skip
    if not annotations:
        raise TrtflowError(
            "the reference produced no detections on the held-aside images, nothing to compare",
            "lower int8.gate.score_threshold (0 keeps the top_k candidates of every image)",
        )
    if not results:
        return {"map50_95": 0.0, "map50": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1} for c in range(num_classes)]}  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max(100, max_detections)]
        ev.evaluate()
        ev.accumulate()
    log.debug("%s", buf.getvalue())
    return _summary(ev)


def _summary(ev: Any) -> dict[str, float]:
    """mAP@.5:.95 and mAP@.5 of an accumulated COCOeval at its largest maxDets, area "all"."""
    prec = ev.eval["precision"][:, :, :, 0, -1]  # [iou, recall, class, area, maxDets]

    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else 0.0

    return {"map50_95": mean(prec), "map50": mean(prec[0])}


def recall_at(
    references: list[dict[str, np.ndarray]],
    predictions: list[dict[str, np.ndarray]],
    iou: float = 0.5,
) -> float:
    """Share of reference detections with a same-class prediction at IoU >= ``iou``."""
    hit = total = 0
    for ref, pred in zip(references, predictions, strict=True):
        total += len(ref["boxes"])
        if len(ref["boxes"]) and len(pred["boxes"]):
            m = box_iou(ref["boxes"], pred["boxes"]) >= iou
            m &= ref["classes"][:, None] == pred["classes"][None, :]
            hit += int(m.any(axis=1).sum())
    return hit / total if total else 0.0


def error_stats(int8: np.ndarray, fp32: np.ndarray) -> dict[str, float]:
    d = np.abs(int8.astype(np.float64) - fp32.astype(np.float64))
    ref = fp32.astype(np.float64)
    noise = float(np.mean(d**2))
    return {
        "max_abs": float(d.max(initial=0.0)),
        "mean_abs": float(d.mean()) if d.size else 0.0,
        "p99_abs": float(np.percentile(d, 99)) if d.size else 0.0,
        "sqnr_db": float(10 * np.log10(np.mean(ref**2) / noise)) if noise > 0 else float("inf"),
    }


# ---------------------------------------------------------------- running models
class _Model:
    """An ONNX (fp32 or Q/DQ) in ONNX Runtime CPU, fed NCHW images in its own layout/batch.

    A Q/DQ model runs in its ``integer_form`` with graph optimisations off — TensorRT's int8
    arithmetic, the same on every CPU — never through ONNX Runtime's fused integer kernels,
    whose results depend on the instruction set (README "INT8").
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        from trtflow.bench import make_session
        from trtflow.quantize import load_exact

        self.session = make_session(load_exact(path), threads, exact=True)
        self.input = self.session.get_inputs()[0]
        dim0 = self.input.shape[0]
        self.batch = dim0 if isinstance(dim0, int) and dim0 > 0 else 1

    def __call__(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        from trtflow.calib import to_layout

        x = to_layout(x_nchw, list(self.input.shape))
        chunks = []
        for i in range(0, len(x), self.batch):
            part = x[i : i + self.batch]
            n = len(part)
            if n < self.batch:  # pad a static batch with copies, drop them afterwards
                part = np.concatenate([part, np.repeat(part[-1:], self.batch - n, axis=0)])
            chunks.append([o[:n] for o in self.session.run(None, {self.input.name: part})])
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


# ---------------------------------------------------------------- labelled set
def _labelled_set(
    images: str | Path, annotations: str | Path, image_size: int, count: int
) -> tuple[Any, list[dict[str, Any]], np.ndarray, list[int]]:
    """COCO GT, the images used (id, file, ratio, pad), their letterboxed array, category ids."""
    from pycocotools.coco import COCO

    from trtflow.calib import load_rgb, preprocess

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(annotations))
    except (OSError, json.JSONDecodeError, KeyError, AssertionError) as exc:
        raise TrtflowError(
            f"{annotations} is not a COCO-format annotation file ({exc})",
            "point int8.eval.annotations at a COCO instances JSON",
        ) from None
    folder = Path(images)
    entries = [im for im in sorted(gt.dataset.get("images", []), key=lambda d: d["id"])
               if (folder / im["file_name"]).is_file()]  # fmt: skip
    if count:
        entries = entries[:count]
    if not entries:
        raise TrtflowError(
            f"none of the images of {annotations} is in {folder}",
            "set int8.eval.images to the folder holding the annotated images",
        )
    used, arrays = [], []
    for im in entries:
        x, r, pad = preprocess(load_rgb(folder / im["file_name"]), image_size)
        used.append({"id": im["id"], "file": im["file_name"], "ratio": r, "pad": pad})
        arrays.append(x)
    return gt, used, np.stack(arrays), sorted(gt.getCatIds())


def _labelled_maps(
    gt: Any, used: list[dict[str, Any]], dets: list[dict[str, Any]], cats: list[int], max_det: int
) -> dict[str, float]:
    """mAP@.5:.95 and mAP@.5 against the labels (boxes mapped back through the letterbox)."""
    from pycocotools.cocoeval import COCOeval

    results = []
    for im, det in zip(used, dets, strict=True):
        pw, ph = im["pad"]
        for b, s, c in zip(det["boxes"], det["scores"], det["classes"], strict=True):
            if c >= len(cats):
                continue
            x0, y0 = (b[0] - pw) / im["ratio"], (b[1] - ph) / im["ratio"]
            x1, y1 = (b[2] - pw) / im["ratio"], (b[3] - ph) / im["ratio"]
            results.append({"image_id": im["id"], "category_id": cats[int(c)],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})  # fmt: skip
    if not results:
        return {"map50_95": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.imgIds = [im["id"] for im in used]
        ev.params.maxDets = [1, 10, max(100, max_det)]
        ev.evaluate()
        ev.accumulate()
    return _summary(ev)


def _labelled_report(
    gt: Any,
    used: list[dict[str, Any]],
    dets: dict[str, list[dict[str, Any]]],
    cats: list[int],
    max_det: int,
    max_map_drop: float,
    max_map50_drop: float,
) -> tuple[dict[str, Any], list[str]]:
    """fp32 and INT8 mAP@.5 and mAP@.5:.95 against the labels, and the failures of the drops."""
    m32, m8 = (_labelled_maps(gt, used, dets[k], cats, max_det) for k in ("fp32", "int8"))
    report = {"count": len(used), "map_fp32": m32["map50_95"], "map_int8": m8["map50_95"],
              "map50_fp32": m32["map50"], "map50_int8": m8["map50"],
              "map_drop": m32["map50_95"] - m8["map50_95"],
              "map50_drop": m32["map50"] - m8["map50"],
              "max_map_drop": max_map_drop, "max_map50_drop": max_map50_drop}  # fmt: skip
    log.info(
        "labelled set (%d images): fp32 mAP@.5 %.4f mAP@.5:.95 %.4f, INT8 mAP@.5 %.4f "
        "mAP@.5:.95 %.4f", len(used), m32["map50"], m32["map50_95"], m8["map50"], m8["map50_95"],
    )  # fmt: skip
    failures = []
    for key, limit, name in (("map", max_map_drop, "mAP"),
                             ("map50", max_map50_drop, "mAP@.5")):  # fmt: skip
        if report[f"{key}_drop"] > limit:
            failures.append(
                f"labelled {name} drops {report[f'{key}_drop']:.4f} (fp32 "
                f"{report[f'{key}_fp32']:.4f}, INT8 {report[f'{key}_int8']:.4f}) > {limit}"
            )
    return report, failures


# ---------------------------------------------------------------- stage function
def check_int8_accuracy(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    holdout_npy: str | Path,
    out_json: str | Path,
    score_threshold: float = 0.25,
    top_k: int = 100,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    min_map50_vs_fp32: float = 0.5,
    eval_images: str | Path | None = None,
    eval_annotations: str | Path | None = None,
    eval_count: int = 0,
    max_map_drop: float = 0.02,
    threads: int = 0,
    max_map50_drop: float = 0.01,
    enforce: bool = True,
) -> dict[str, Any]:
    """Compare INT8 with fp32 on the held-aside images; raise below the floors.

    With ``enforce=False`` (the workflow's check_int8_accuracy) a failed gate is written as the
    verdict (``ok: false`` and its ``failures``) instead; trtflow.gates.check_gates raises later.
    """
    from trtflow.calib import load_array

    started = time.time()
    x = load_array(holdout_npy, "held-aside image array")
    fp32, int8 = _Model(fp32_onnx, threads), _Model(int8_onnx, threads)
    pp = {"score_threshold": score_threshold, "top_k": top_k, "iou_threshold": iou_threshold,
          "max_detections": max_detections}  # fmt: skip
    boxes_f, scores_f = split_outputs(fp32(x))
    boxes_q, scores_q = split_outputs(int8(x))
    ref = [postprocess(b, s, **pp) for b, s in zip(boxes_f, scores_f, strict=True)]
    det = [postprocess(b, s, **pp) for b, s in zip(boxes_q, scores_q, strict=True)]
    size = (x.shape[2], x.shape[3])
    agreement = coco_map(ref, det, scores_f.shape[-1], [size] * len(x), max_detections)
    report: dict[str, Any] = {
        "fp32": str(fp32_onnx),
        "int8": str(int8_onnx),
        "images": int(len(x)),
        "postprocess": pp,
        "errors": {
            "boxes_px": error_stats(boxes_q, boxes_f),
            "scores": error_stats(scores_q, scores_f),
        },
        "detections_per_image_fp32": float(np.mean([len(r["boxes"]) for r in ref])),
        "detections_per_image_int8": float(np.mean([len(d["boxes"]) for d in det])),
        "map_vs_fp32": agreement["map50_95"],
        "map50_vs_fp32": agreement["map50"],
        "recall50_vs_fp32": recall_at(ref, det),
        "min_map50_vs_fp32": min_map50_vs_fp32,
    }
    log.info(
        "%d held-aside images: boxes max abs %.3g px (SQNR %.1f dB), scores max abs %.3g; "
        "INT8 vs fp32 mAP@.5:.95 %.3f, mAP@.5 %.3f (floor %.3f), recall@.5 %.3f",
        len(x), report["errors"]["boxes_px"]["max_abs"], report["errors"]["boxes_px"]["sqnr_db"],
        report["errors"]["scores"]["max_abs"], agreement["map50_95"], agreement["map50"],
        min_map50_vs_fp32, report["recall50_vs_fp32"],
    )  # fmt: skip
    failures = []
    if agreement["map50"] < min_map50_vs_fp32:
        failures.append(
            f"INT8 vs fp32 detection agreement mAP@.5 {agreement['map50']:.3f} < floor "
            f"{min_map50_vs_fp32} (int8.gate.min_map50_vs_fp32)"
        )
    if eval_images and eval_annotations:
        gt, used, xe, cats = _labelled_set(eval_images, eval_annotations, size[0], eval_count)
        dets = {}
        for name, model in (("fp32", fp32), ("int8", int8)):
            b, s = split_outputs(model(xe))
            dets[name] = [postprocess(bi, si, **pp) for bi, si in zip(b, s, strict=True)]
        report["labelled"], why = _labelled_report(
            gt, used, dets, cats, max_detections, max_map_drop, max_map50_drop
        )
        report["labelled"].update(images=str(eval_images), annotations=str(eval_annotations))
        failures += why
    report["ok"] = not failures
    report["failures"] = failures
    report["seconds"] = round(time.time() - started, 3)
    if failures and enforce:
        raise TrtflowError(
            f"INT8 accuracy gate failed for {int8_onnx}: " + "; ".join(failures),
            "calibrate on more/representative images (calibration.count, calibration.images), try "
            "int8.method entropy/percentile, or keep more nodes float (int8.float_nodes)",
        )
    for f in failures:
        log.warning("INT8 gate FAILED (written as the verdict; check_gates fails the run): %s", f)
    write_json(out_json, report)
    return report
