"""Comparing detector outputs: inputs, per-field errors and tolerances in each field's unit."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trtflow.core.errors import TrtflowError

log = logging.getLogger(__name__)


def make_inputs(batch: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Deterministic NHWC float32 images in [0, 1] (the same for every stage and host)."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, image_size, image_size, 3), dtype=np.float32)


def errors(
    actual: np.ndarray, reference: np.ndarray, atol: float, rtol: float, scale: float = 1.0
) -> dict[str, Any]:
    """Error statistics of one output and an allclose-style verdict:
    |a-b| <= atol * scale + rtol * |b|, where ``scale`` is the field's own unit (the image size
    for pixel boxes, 1 for normalised boxes and for scores; ``field_errors``), so one tolerance
    means the same for every field and every box format.

    ``max_rel`` is the relative error of the whole tensor, max|a-b| / max|b| (infinity norm);
    ``max_elem_rel`` is the worst elementwise |a-b|/|b| among elements with |b| > atol * scale
    (tiny sigmoid scores would otherwise report float32 noise as a large relative error).
    """
    if actual.shape != reference.shape:
        raise TrtflowError(
            f"output shapes differ: {actual.shape} vs reference {reference.shape}",
            "check the patch recipe (fix_batch / efficient_nms)",
        )
    diff = np.abs(actual.astype(np.float64) - reference.astype(np.float64))
    ref = np.abs(reference.astype(np.float64))
    big = ref > atol * scale
    bad = diff > atol * scale + rtol * ref
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "max_rel": float(
            diff.max(initial=0.0) / max(ref.max(initial=0.0), np.finfo(np.float32).tiny)
        ),
        "max_elem_rel": float((diff[big] / ref[big]).max(initial=0.0)),
        "max_abs_in_scale": float(diff.max(initial=0.0) / scale),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "scale": float(scale),
        "mismatched": int(bad.sum()),
        "elements": int(diff.size),
        "ok": bool(not bad.any()),
    }


def box_scale(box_format: str, image_size: int) -> float:
    """The unit of a box coordinate: the image size for pixels, 1 for normalised (0-1) boxes."""
    return float(image_size) if box_format == "pixels" else 1.0


def field_errors(
    actual: np.ndarray, reference: np.ndarray, atol: float, rtol: float, boxes_unit: float
) -> dict[str, Any]:
    """``errors`` of a [B, N, 5+C] detection output per field — boxes (xywh, in ``boxes_unit``)
    and scores (objectness and classes, unit 1) — and of the whole output (``ok`` only if every
    field passes; ``max_abs``/``max_rel`` over the whole tensor)."""
    if actual.shape != reference.shape or actual.ndim != 3 or actual.shape[-1] < 6:
        return errors(actual, reference, atol, rtol)
    fields = {
        "boxes": errors(actual[..., :4], reference[..., :4], atol, rtol, boxes_unit),
        "scores": errors(actual[..., 4:], reference[..., 4:], atol, rtol, 1.0),
    }
    whole = errors(actual, reference, atol, rtol)
    whole.update(
        fields=fields,
        mismatched=sum(f["mismatched"] for f in fields.values()),
        ok=all(f["ok"] for f in fields.values()),
    )
    return whole


def split_detections(y: np.ndarray) -> dict[str, np.ndarray]:
    """[B,N,5+C] -> boxes [B,N,4] and scores obj*cls [B,N,C] (what efficient_nms feeds)."""
    return {"boxes": y[..., :4], "scores": y[..., 4:5] * y[..., 5:]}
