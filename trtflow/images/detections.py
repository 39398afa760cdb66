"""Detections: decode outputs, NMS, IoU, COCO-style mAP and error statistics."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError

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
