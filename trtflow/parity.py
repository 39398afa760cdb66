"""Stage "parity" (convert host): TF vs raw ONNX vs patched ONNX on the same inputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.errors import TrtflowError
from trtflow.manifest import read_json, write_json
from trtflow.onnxio import load_onnx

log = logging.getLogger(__name__)


def make_inputs(batch: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Deterministic NHWC float32 images in [0, 1] (the same for every stage and host)."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, image_size, image_size, 3), dtype=np.float32)


def to_layout(x_nhwc: np.ndarray, shape: list[Any]) -> np.ndarray:
    """Transpose NHWC images to what an ONNX input of ``shape`` expects."""
    if len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    return x_nhwc


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


class OnnxRunner:
    """ONNX Runtime CPU session with one input and named outputs."""

    def __init__(self, path: str | Path | Any) -> None:
        from trtflow.bench import make_session

        self.session = make_session(path)
        self.input = self.session.get_inputs()[0]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
        from trtflow.tfgraph import in_chunks

        x = to_layout(x_nhwc, list(self.input.shape))
        lead = self.input.shape[0]
        fixed = lead if isinstance(lead, int) and lead > 0 else None
        outs = in_chunks(lambda p: self.session.run(None, {self.input.name: p}), x, fixed)
        return dict(zip(self.outputs, outs, strict=True))


def check_parity(
    pb: str | Path,
    pb_manifest: str | Path,
    raw_onnx: str | Path,
    patched_onnx: str | Path,
    patched_manifest: str | Path,
    out_json: str | Path,
    image_size: int,
    seed: int = 0,
    batch: int = 2,
    atol: float = 1e-3,
    rtol: float = 1e-4,
    box_format: str | None = None,
    enforce: bool = True,
) -> dict[str, Any]:
    """Compare TF, raw ONNX and patched ONNX outputs; raise when beyond tolerance.

    With ``enforce=False`` (the workflow's check_parity) a failure is written as the verdict
    (``ok: false`` and its ``failures``) instead; trtflow.gates.check_gates raises later.

    A patched graph that ends in EfficientNMS_TRT is compared before the plugin (boxes and
    scores), since ONNX Runtime cannot run TensorRT plugins. A source with normalised xywh is
    scaled to pixels before comparing with a patched graph that has denormalize_boxes.
    """

    from trtflow.discover import recorded
    from trtflow.patches import strip_nms
    from trtflow.tfgraph import FrozenGraphRunner

    started = time.time()
    io = read_json(pb_manifest)["io"]
    box_format = box_format or recorded(pb_manifest, "box_format", "pixels")
    pmeta = read_json(patched_manifest)
    if pmeta.get("options", {}).get("batch") not in (None, "dynamic"):
        batch = int(pmeta["options"]["batch"])
    x = make_inputs(batch, image_size, seed)
    tf_out = FrozenGraphRunner(pb, io["input_name"], io["output_name"])(x)
    raw_out = list(OnnxRunner(raw_onnx)(x).values())[0]

    reference = tf_out.copy()
    if box_format == "normalized" and pmeta.get("box_format") == "pixels":
        reference[..., :4] *= image_size
    patched_model = load_onnx(patched_onnx)
    compared_before_nms = pmeta.get("has_nms", False)
    if compared_before_nms:
        patched_model = strip_nms(patched_model)
    patched = OnnxRunner(patched_model)(x)
    raw_unit = box_scale(box_format, image_size)
    patched_unit = box_scale(pmeta.get("box_format", box_format), image_size)
    if compared_before_nms:
        ref = split_detections(reference)
        units = {"boxes": patched_unit, "scores": 1.0}
        patched_vs_tf = {
            name: errors(arr, ref[name], atol, rtol, units[name])
            for name, arr in zip(("boxes", "scores"), patched.values(), strict=True)
        }
    else:
        name, arr = next(iter(patched.items()))
        patched_vs_tf = {name: field_errors(arr, reference, atol, rtol, patched_unit)}

    report: dict[str, Any] = {
        "image_size": image_size,
        "batch": batch,
        "seed": seed,
        "atol": atol,
        "rtol": rtol,
        "compared_before_nms": compared_before_nms,
        "tolerance": "|onnx - tf| <= atol * unit + rtol * |tf| per field; unit = image size "
        "for pixel boxes, 1 for normalised boxes and scores",
        "raw_vs_tf": {io["output_name"]: field_errors(raw_out, tf_out, atol, rtol, raw_unit)},
        "patched_vs_tf": patched_vs_tf,
    }
    report["max_abs"] = max(e["max_abs"] for e in report["patched_vs_tf"].values())
    report["max_rel"] = max(e["max_rel"] for e in report["patched_vs_tf"].values())
    report["ok"] = all(
        e["ok"] for part in ("raw_vs_tf", "patched_vs_tf") for e in report[part].values()
    )
    report["seconds"] = round(time.time() - started, 3)
    for part in ("raw_vs_tf", "patched_vs_tf"):
        for name, e in report[part].items():
            log.info(
                "%s %s: max_abs %.3g max_rel %.3g mismatched %d/%d",
                *(part, name, e["max_abs"], e["max_rel"], e["mismatched"], e["elements"]),
            )
    report["failures"] = []
    if not report["ok"]:
        worst = max(
            ((p, n, e) for p in ("raw_vs_tf", "patched_vs_tf") for n, e in report[p].items()),
            key=lambda t: t[2]["mismatched"],
        )
        report["failures"] = [
            f"{worst[0]} output {worst[1]} has {worst[2]['mismatched']} elements beyond atol "
            f"{atol} x unit + rtol {rtol} (max abs {worst[2]['max_abs']:.3g}, max rel "
            f"{worst[2]['max_rel']:.3g})"
        ]
    if report["failures"] and enforce:
        raise TrtflowError(
            f"parity failed for {patched_onnx}: {report['failures'][0]}",
            "inspect the patch recipe, or loosen parity.atol/parity.rtol if the drift is expected",
        )
    for f in report["failures"]:
        log.warning("parity FAILED (written as the verdict; check_gates fails the run): %s", f)
    write_json(out_json, report)
    return report
