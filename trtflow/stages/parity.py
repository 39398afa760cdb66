"""Stage "parity" (convert host): TF vs raw ONNX vs patched ONNX on the same inputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trtflow.core.commands import report_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import read_json, write_json
from trtflow.onnx.compare import box_scale, errors, field_errors, make_inputs, split_detections
from trtflow.onnx.io import load_onnx
from trtflow.onnx.ort import OnnxRunner

log = logging.getLogger(__name__)


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
    (``ok: false`` and its ``failures``) instead; trtflow.reporting.gates.check_gates raises later.

    A patched graph that ends in EfficientNMS_TRT is compared before the plugin (boxes and
    scores), since ONNX Runtime cannot run TensorRT plugins. A source with normalised xywh is
    scaled to pixels before comparing with a patched graph that has denormalize_boxes.
    """
    arguments = dict(locals())  # for the report's command
    from trtflow.onnx.plugins import strip_nms
    from trtflow.tf.discover import recorded
    from trtflow.tf.graph import FrozenGraphRunner

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
    report["command"] = report_command("parity", arguments)
    write_json(out_json, report)
    return report
