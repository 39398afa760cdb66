"""The labelled set and the models the INT8 gate (and the pictures stage) score on it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError
from trtflow.images.detections import _summary

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- running models
def exact_runner(path: str | Path, threads: int = 0) -> Callable[[np.ndarray], list[np.ndarray]]:
    """An ONNX (fp32 or Q/DQ) on ONNX Runtime CPU, fed NCHW images: its outputs as a list.

    A Q/DQ model runs in its ``integer_form`` with graph optimisations off — TensorRT's int8
    arithmetic, the same on every CPU — never through ONNX Runtime's fused integer kernels,
    whose results depend on the instruction set (README "INT8"). One image per run: the
    integer form's activations of hundreds of images would not fit in memory.
    """
    from trtflow.onnx.ort import OnnxRunner
    from trtflow.quant.exact import load_exact

    runner = OnnxRunner(load_exact(path), threads, exact=True, pad=True, chunk=1)
    return lambda x_nchw: list(runner(x_nchw, "NCHW").values())


# ---------------------------------------------------------------- labelled set
def _labelled_set(
    images: str | Path, annotations: str | Path, image_size: int, count: int
) -> tuple[Any, list[dict[str, Any]], np.ndarray, list[int]]:
    """COCO GT, the images used (id, file, ratio, pad), their letterboxed array, category ids."""
    from pycocotools.coco import COCO

    from trtflow.images.io import load_rgb, preprocess

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
